"""`dia-llama app MODEL`: a Gradio viewer of the scan, the disease-aware attention and the report, side by side.

    dia-llama app runs/demo/model --host 127.0.0.1 --port 7860        # needs: pip install "dia-llama[app]"

Upload a NIfTI / NRRD / MHA file or a zip of a DICOM series, or pick a bundled synthetic case; the page shows the
axial, coronal and sagittal slices (a slider each, CT window presets), the attention of any disease as an overlay, the
diagnosis table (probability, threshold, decision), the generated report and a JSON download of the record (the
schema of `dia-llama generate --json`). The named endpoint `/generate` takes a scan file and returns the report and
the diagnoses, for `gradio_client`:

    from gradio_client import Client, handle_file
    report, diagnoses = Client("http://127.0.0.1:7860/").predict(handle_file("scan.nii.gz"), api_name="/generate")

Offline by design: no share link, no telemetry, system fonts only (no font or CDN request leaves the machine).
The request handler is `app_handler.ReportService` (plain Python); the rendering is `app_views`.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import tempfile
import threading
import traceback
from pathlib import Path

from .app_handler import ReportService, ScanAnalysis, ScanError, write_example_cases
from .app_views import SLICED_AXIS, VIEWS, WINDOWS, render_view

TITLE = "Dia-LLaMA: chest CT report viewer"
SMALL_MODEL_PARAMETERS = 100_000_000  # below this, one CPU thread generates faster than several (short ops)
DEFAULT_WINDOW = "mediastinum"
STATE_SESSIONS = 8  # browser sessions whose scan stays in memory (a 512×512×300 CT holds 150 MB)
DELETE_CACHE = (3600, 3600)  # every hour, remove uploads and images older than an hour
NO_SCAN = "Upload a scan (NIfTI, NRRD, MHA or a zip of a DICOM series) or pick an example case."


def import_gradio():
    """gradio, imported offline (no telemetry, no version check), or an ImportError saying how to install it."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    try:
        import gradio
    except ImportError as err:
        raise ImportError(f"dia-llama app needs Gradio ({err}): pip install 'dia-llama[app]'") from None
    return gradio


def _theme():
    gr = import_gradio()
    return gr.themes.Base(font=["system-ui", "-apple-system", "Segoe UI", "Roboto", "sans-serif"],
                          font_mono=["ui-monospace", "Menlo", "Consolas", "monospace"])


# ---------------------------------------------------------------------------------------------------------------------
# Callbacks (plain functions of the service and the page's values)


def render_views(analysis: ScanAnalysis | None, window: str, overlay: bool, disease: str | None, axial: int,
                 coronal: int, sagittal: int) -> list:
    """The three views (None without a scan). The overlay shows `disease`'s attention when `overlay` is on."""
    if analysis is None:
        return [None, None, None]
    attention = None
    if overlay and analysis.attention is not None and disease in analysis.disease_names:
        attention = analysis.attention[analysis.disease_names.index(disease)]
    positions = {"axial": int(axial), "coronal": int(coronal), "sagittal": int(sagittal)}
    return [render_view(analysis.volume, view, positions[view], window, attention, crosshair=positions)
            for view in VIEWS]


def status_markdown(analysis: ScanAnalysis) -> str:
    seconds = analysis.seconds
    lines = [f"**{analysis.record['scan']}**: report generated in {seconds['read'] + seconds['model']:.1f} s "
             f"(reading {seconds['read']:.1f} s, model {seconds['model']:.1f} s)."]
    if not analysis.volume.is_hu:
        lines.append("Not in Hounsfield units: the views show the volume's own intensity range (the window presets "
                     "do not apply).")
    if analysis.attention is None:
        lines.append("This model pools the patches without disease-aware attention: no overlay to show.")
    lines += [f"Note: {note}" for note in analysis.notes]
    return "\n\n".join(lines)


def error_markdown(message: str) -> str:
    return f"**Error:** {message}"


def write_record(record: dict, folder: Path) -> str:
    """The record as `<scan name>.dia-llama.json` in a new subfolder of `folder` (two sessions never share a file)."""
    stem = Path(record["scan"]).name.split(".")[0] or "scan"
    path = Path(tempfile.mkdtemp(dir=folder)) / f"{stem}.dia-llama.json"
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return str(path)


# ---------------------------------------------------------------------------------------------------------------------
# The page


def build_app(service: ReportService, examples_dir=None, downloads_dir=None):
    """The Gradio Blocks of the viewer around `service` (not launched)."""
    gr = import_gradio()

    examples_dir = Path(examples_dir or tempfile.mkdtemp(prefix="dia-llama-app-examples-"))
    downloads_dir = Path(downloads_dir or tempfile.mkdtemp(prefix="dia-llama-app-records-"))
    examples = write_example_cases(examples_dir)
    references = {path.name: (examples_dir / f"{case.name}.txt").read_text(encoding="utf-8").strip()
                  for case, path in examples}
    hidden = {"visible": False}

    with gr.Blocks(title=TITLE, analytics_enabled=False, delete_cache=DELETE_CACHE) as demo:
        gr.Markdown(f"## {TITLE}\nModel: `{service.model_name}`. Research software, not for clinical use.")
        analysis_state = gr.State(None)
        with gr.Row():
            with gr.Column(scale=1, min_width=280):
                scan = gr.File(label="CT scan", file_types=[".nii", ".gz", ".nrrd", ".mha", ".zip"], type="filepath",
                               elem_id="scan-upload")
                gr.Markdown("NIfTI (.nii, .nii.gz), NRRD (.nrrd), MetaImage (.mha), or a .zip of one DICOM series.")
                gr.Examples([[str(path)] for _, path in examples], inputs=[scan],
                            example_labels=[case.label for case, _ in examples], label="Synthetic example cases")
                status = gr.Markdown(NO_SCAN, elem_id="status")
            with gr.Column(scale=3):
                with gr.Row():
                    window = gr.Radio(list(WINDOWS), value=DEFAULT_WINDOW, label="CT window", elem_id="window")
                    overlay = gr.Checkbox(value=True, label="Disease attention overlay", elem_id="overlay")
                    disease = gr.Dropdown([], label="Attention of", interactive=True, elem_id="disease")
                images, sliders = [], []
                with gr.Row():
                    for view in VIEWS:
                        with gr.Column(min_width=200):
                            images.append(gr.Image(label=view, type="numpy", format="png", interactive=False,
                                                   buttons=["download", "fullscreen"], elem_id=f"view-{view}"))
                            sliders.append(gr.Slider(0, 1, value=0, step=1, label=f"{view} slice",
                                                     interactive=False, elem_id=f"slider-{view}"))
        with gr.Row():
            table = gr.Dataframe(headers=["disease", "probability", "threshold", "decision"], interactive=False,
                                 label="Diagnoses (disease branch)", max_height=720, elem_id="diagnoses")
            with gr.Column():
                report = gr.Textbox(label="Generated report", lines=8, interactive=False, elem_id="report")
                reference = gr.Textbox(label="Reference report of this synthetic example (its ground truth)", lines=4,
                                       interactive=False, visible=False, elem_id="reference")
                download = gr.DownloadButton("Download record (JSON)", value=None, interactive=False,
                                             elem_id="download")
        # the API endpoint: a scan file → (report, diagnoses), for gradio_client
        api_scan = gr.File(label="scan", type="filepath", **hidden)
        api_report, api_diagnoses = gr.Textbox(label="report", **hidden), gr.JSON(label="diagnoses", **hidden)
        api_trigger = gr.Button(**hidden)

        def analyze_for_page(path, window_name, show):
            """Upload / example / clear → every output of the page (cleared on an error or without a scan)."""
            cleared = [None, None, "", gr.update(value="", visible=False), gr.update(value=None, interactive=False),
                       gr.update(choices=[], value=None),
                       *[gr.update(value=0, maximum=1, interactive=False) for _ in VIEWS], None, None, None]
            if not path:
                return [NO_SCAN, *cleared]
            try:
                analysis = service.analyze(path)
            except ScanError as err:
                return [error_markdown(str(err)), *cleared]
            except Exception as err:  # unexpected: one line in the page, the traceback on the server
                traceback.print_exc()
                return [error_markdown(f"{Path(path).name}: {type(err).__name__}: {err}"), *cleared]
            middle, name = analysis.volume.middle(), analysis.default_disease()
            sliders_set = [gr.update(value=middle[view], maximum=analysis.volume.shape[SLICED_AXIS[view]] - 1,
                                     interactive=True) for view in VIEWS]
            known = references.get(Path(path).name)
            return [status_markdown(analysis), analysis, analysis.table(), analysis.record["report"],
                    gr.update(value=known or "", visible=known is not None),
                    gr.update(value=write_record(analysis.record, downloads_dir), interactive=True),
                    gr.update(choices=analysis.disease_names, value=name), *sliders_set,
                    *render_views(analysis, window_name, show, name, *(middle[v] for v in VIEWS))]

        common = {"concurrency_id": "model", "concurrency_limit": 1}
        scan.change(analyze_for_page, inputs=[scan, window, overlay],
                    outputs=[status, analysis_state, table, report, reference, download, disease, *sliders, *images],
                    api_visibility="private", **common)
        view_inputs = [analysis_state, window, overlay, disease, *sliders]
        for component in (window, overlay, disease, *sliders):  # user changes only (`input`), the newest wins
            component.input(render_views, inputs=view_inputs, outputs=images, api_visibility="private",
                            show_progress="hidden", trigger_mode="always_last")

        def generate(scan_file):
            """A scan file (NIfTI / NRRD / MHA or a zip of a DICOM series) → (report, diagnoses)."""
            if not scan_file:
                raise gr.Error(NO_SCAN)
            try:
                analysis = service.analyze(scan_file)
            except ScanError as err:
                raise gr.Error(str(err), print_exception=False) from None
            except Exception as err:
                traceback.print_exc()
                raise gr.Error(f"{Path(scan_file).name}: {type(err).__name__}: {err}", print_exception=False) from None
            return analysis.record["report"], analysis.record["diagnoses"]

        api_trigger.click(generate, inputs=[api_scan], outputs=[api_report, api_diagnoses], api_name="generate",
                          **common)
    demo.dia_llama_dirs = (examples_dir, downloads_dir)
    demo.dia_llama_service = service
    return demo


# ---------------------------------------------------------------------------------------------------------------------
# Launching


def choose_num_threads(model, requested: int | None) -> int | None:
    """Torch CPU threads for the app: `requested`, or 1 for a small model on the CPU (its decode steps are short ops
    that wait on busy sibling threads: 2 s instead of 13-24 s per report on a loaded 2-core machine), else None
    (torch's default)."""
    if requested is not None:
        return requested
    on_cpu = next(model.parameters()).device.type == "cpu"
    small = sum(p.numel() for p in model.parameters()) < SMALL_MODEL_PARAMETERS
    return 1 if on_cpu and small else None


def launch_app(model: str, host: str = "127.0.0.1", port: int = 7860, allow_non_ct: bool = False,
               max_new_tokens: int | None = None, num_threads: int | None = None, max_file_size: str = "2gb",
               block: bool = True, **loading_kwargs):
    """Load `model` (a folder or Hub id, with `inference.load_for_inference`'s options) and serve the viewer on
    http://host:port/. `block=False` returns the launched Blocks (tests; close it with `.close()`)."""
    import torch

    from .inference import load_for_inference

    import_gradio()  # before loading a model: say at once when the extra is missing
    net, processor = load_for_inference(model, **loading_kwargs)
    threads = choose_num_threads(net, num_threads)
    if threads:
        torch.set_num_threads(threads)
    kwargs = {"max_new_tokens": max_new_tokens} if max_new_tokens is not None else {}
    service = ReportService(net, processor, str(model), allow_non_ct=allow_non_ct, **kwargs)
    demo = build_app(service)
    for folder in demo.dia_llama_dirs:
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
    demo.queue(default_concurrency_limit=1)
    demo.launch(server_name=host, server_port=port, share=False, prevent_thread_lock=True, ssr_mode=False,
                allowed_paths=[str(d) for d in demo.dia_llama_dirs], max_file_size=max_file_size, theme=_theme(),
                show_error=True, footer_links=["api"], enable_monitoring=False, pwa=False, mcp_server=False,
                state_session_capacity=STATE_SESSIONS, quiet=True)
    print(f"dia-llama app: serving {model} on {demo.local_url} (Ctrl+C to stop)", flush=True)
    if block:
        serve_until_stopped(demo)
    return demo


def serve_until_stopped(demo) -> None:
    """Block until Ctrl+C or SIGTERM (both close the server, so the temporary folders are removed at exit)."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, interrupt) if main else None
    try:
        demo.block_thread()
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)


__all__ = ["build_app", "choose_num_threads", "launch_app", "render_views", "status_markdown"]
