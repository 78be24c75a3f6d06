"""`dia-llama app`: the rendering, the request handler (plain Python), the API endpoint through `gradio_client` and
the page in a real headless Chromium, against an app started by the CLI on a free loopback port with a tiny model.

CI installs Gradio (the `[app]` extra, inside `[all]`), Playwright (`[test]`) and Debian's `chromium` (`.ci/run`):
there, a missing piece fails these tests instead of skipping them."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dia_llama.app_handler import (
    EXAMPLE_CASES,
    ReportService,
    ScanError,
    extract_zip_safely,
    read_scan,
    write_example_cases,
)
from dia_llama.app_views import (
    VIEWS,
    DisplayVolume,
    attention_plane,
    canonical_slice,
    render_view,
    window_to_unit,
)
from dia_llama.data.synthetic import make_case
from dia_llama.inference import RECORD_SCHEMA, generate_reports
from dia_llama.volume_io import write_nifti
from helpers.dicom_fixtures import write_ct_series

CHROMIUM = os.environ.get("DIA_LLAMA_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SERVER_START_TIMEOUT_S = 240


def require(ok: bool, reason: str) -> None:
    """Skip where a piece is missing on a developer's machine; fail in CI, which installs everything."""
    if not ok:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(reason)


def validate_record(record: dict) -> None:
    import jsonschema

    jsonschema.validate(record, RECORD_SCHEMA)


# ---------------------------------------------------------------------------------------------------------------------
# Scans written for the tests


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    """A synthetic chest CT as NIfTI and as a zipped DICOM series (the same HU, the same spacing; the zip also holds
    a README, a macOS resource fork and a nested folder), a broken file and an MR-like volume."""
    root = tmp_path_factory.mktemp("app_scans")
    hu, spacing, _, _ = make_case(np.random.default_rng(5), {"pleural effusion": 1, "cardiomegaly": 1},
                                  volume_size=(96, 96, 48))
    write_nifti(root / "chest.nii.gz", hu, spacing)
    series = write_ct_series(root / "series", hu, spacing=spacing, seed=1)
    with zipfile.ZipFile(root / "chest_dicom.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        for i, path in enumerate(series):
            zf.write(path, f"study/series/{path.name}" if i % 2 else path.name)
        zf.writestr("README.txt", "exported by a PACS")
        zf.writestr("__MACOSX/._IM0001", b"\0\5\26\7")
    (root / "broken.nii.gz").write_bytes(b"this is not a NIfTI file at all")
    mr = np.random.default_rng(0).uniform(50, 900, size=(48, 48, 24)).astype(np.float32)  # no air: not HU
    write_nifti(root / "brain_mr.nii.gz", mr, (4.0, 4.0, 6.0), dtype=np.float32)
    return {"hu": hu, "spacing": spacing, "nifti": root / "chest.nii.gz", "zip": root / "chest_dicom.zip",
            "broken": root / "broken.nii.gz", "mr": root / "brain_mr.nii.gz"}


# ---------------------------------------------------------------------------------------------------------------------
# Rendering


def test_attention_plane_equals_trilinear_upsampling_of_the_grid():
    grid = np.random.default_rng(0).random((4, 3, 5)).astype(np.float32)  # (h, w, d)
    shape = (16, 9, 20)
    full = F.interpolate(torch.from_numpy(grid)[None, None], size=shape, mode="trilinear",
                         align_corners=False)[0, 0].numpy()
    for view in VIEWS:
        for index in (0, 3, 7, 8):
            torch.testing.assert_close(attention_plane(grid, view, index, shape), canonical_slice(full, view, index),
                                       rtol=0, atol=2e-6)


def test_views_follow_the_radiological_orientation_at_physical_aspect():
    # canonical (H, W, D) = rows anterior→posterior, cols patient right→left, slices inferior→superior
    hu = np.full((40, 40, 20), -1000, np.int16)
    hu[2:6, 2:6, :] = 1000  # anterior, patient right
    hu[:, :, 16:] = np.maximum(hu[:, :, 16:], 200)  # superior slab
    volume = DisplayVolume.from_stored(hu, (1.0, 1.0, 4.0), is_hu=True)
    axial = render_view(volume, "axial", 10, "bone", size=80)  # 40 × 40 mm → 80 × 80 (the 80 mm depth is longest)
    assert axial.shape == (40, 40, 3) and axial.dtype == np.uint8
    assert axial[3:5, 3:5].min() > 200 and axial[-8:, -8:].max() < 5  # anterior up, patient right on the left
    coronal = render_view(volume, "coronal", 3, "bone", size=80)
    assert coronal.shape == (80, 40, 3)  # 80 mm superior-inferior, 40 mm right-left
    assert coronal[:10].mean() > coronal[-10:].mean() + 50  # superior up
    sagittal = render_view(volume, "sagittal", 3, "bone", size=80)
    assert sagittal.shape == (80, 40, 3)
    assert sagittal[40:, 3:5].min() > 200 and sagittal[40:, -8:].max() < 5  # anterior on the left


def test_window_presets_map_hounsfield_units():
    volume = DisplayVolume.from_stored(np.zeros((2, 2, 2), np.int16), (1, 1, 1), is_hu=True)
    values = np.array([-1350.0, -600.0, 150.0, 40.0, 2000.0], np.float32)
    np.testing.assert_allclose(window_to_unit(values, "lung", volume), [0, 0.5, 1, 1390 / 1500, 1], atol=1e-6)
    np.testing.assert_allclose(window_to_unit(values, "mediastinum", volume)[3], (40 + 125) / 350, atol=1e-6)
    np.testing.assert_allclose(window_to_unit(values, "bone", volume)[[1, 4]], [0, 1], atol=1e-6)
    with pytest.raises(ValueError, match="unknown window 'brain'"):
        window_to_unit(values, "brain", volume)
    mr = DisplayVolume.from_stored(np.linspace(0, 100, 1000).reshape(10, 10, 10), (1, 1, 1), is_hu=False)
    assert mr.value_range[0] < 1 and mr.value_range[1] > 99  # non-HU: the volume's own range, whatever the window
    np.testing.assert_allclose(window_to_unit(np.float32(50), "lung", mr), 0.5, atol=0.01)


def test_overlay_changes_only_where_attention_lies():
    hu = np.zeros((32, 32, 16), np.int16)
    volume = DisplayVolume.from_stored(hu, (1.0, 1.0, 2.0), is_hu=True)
    attention = np.zeros((4, 4, 4), np.float32)
    attention[0, 0, 2] = 1.0  # anterior, patient right, mid height
    plain = render_view(volume, "axial", 8, "mediastinum", size=32).astype(int)
    blended = render_view(volume, "axial", 8, "mediastinum", attention, size=32).astype(int)
    change = np.abs(blended - plain).sum(-1)
    assert change[:8, :8].mean() > 40 and change[16:, 16:].max() == 0
    assert (blended[:4, :4, 0] > blended[:4, :4, 2]).all()  # warm colours


# ---------------------------------------------------------------------------------------------------------------------
# Uploads


def test_extract_zip_safely_never_writes_outside_and_enforces_limits(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../../escaped.dcm", b"a" * 10)
        zf.writestr("/abs/olute.dcm", b"b" * 10)
        zf.writestr("ok/slice1.dcm", b"c" * 10)
        zf.writestr(".hidden", b"d")
        link = zipfile.ZipInfo("link.dcm")
        link.external_attr = (0o120777 << 16)  # a symbolic link entry
        zf.writestr(link, "/etc/passwd")
    dest = tmp_path / "out" / "deep"
    dest.mkdir(parents=True)
    assert extract_zip_safely(archive, dest) == 3
    assert sorted(p.name for p in dest.iterdir()) == ["00000.dcm", "00001.dcm", "00002.dcm"]
    assert sorted(p.read_bytes() for p in dest.iterdir()) == [b"a" * 10, b"b" * 10, b"c" * 10]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["deep"] and not (tmp_path / "escaped.dcm").exists()

    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("big.dcm", b"\0" * (3 << 20))  # 3 MiB of zeros deflate to a few KiB
    assert bomb.stat().st_size < 50_000
    (tmp_path / "b").mkdir()
    with pytest.raises(ScanError, match=r"bomb\.zip: more than 0\.0 GiB once unpacked"):
        extract_zip_safely(bomb, tmp_path / "b", max_bytes=1 << 20)
    (tmp_path / "c").mkdir()
    with pytest.raises(ScanError, match=r"evil\.zip: more than 2 files"):
        extract_zip_safely(archive, tmp_path / "c", max_members=2)
    (tmp_path / "not.zip").write_bytes(b"PK but not really")
    with pytest.raises(ScanError, match=r"not\.zip: not a readable zip archive"):
        extract_zip_safely(tmp_path / "not.zip", tmp_path / "c")


def test_read_scan_dicom_zip_equals_the_nifti(scans):
    volume, notes = read_scan(scans["zip"])
    assert volume.kind == "hu" and notes == []
    np.testing.assert_array_equal(volume.array, scans["hu"].astype(np.float32))
    np.testing.assert_allclose(volume.spacing, scans["spacing"], rtol=1e-5)
    with pytest.raises(ScanError, match=r"^broken\.nii\.gz: .*(gzip|NIfTI)"):
        read_scan(scans["broken"])
    with pytest.raises(ScanError, match=r"^notes\.txt: unsupported file type '\.txt'"):
        read_scan(scans["broken"], name="notes.txt")


def test_example_cases_are_deterministic(tmp_path):
    first = write_example_cases(tmp_path / "a", volume_size=(32, 32, 16))
    second = write_example_cases(tmp_path / "b", volume_size=(32, 32, 16))
    assert [c.name for c, _ in first] == [c.name for c in EXAMPLE_CASES]
    for (_, a), (_, b) in zip(first, second):
        assert a.read_bytes() == b.read_bytes()
    assert "pleural effusion" in (tmp_path / "a" / f"{EXAMPLE_CASES[0].name}.txt").read_text().lower()


# ---------------------------------------------------------------------------------------------------------------------
# The request handler (no server)


@pytest.fixture(scope="module")
def service(tiny_model_and_processor):
    model, processor = tiny_model_and_processor
    return ReportService(model, processor, "tiny-test", max_new_tokens=12)


def test_handler_record_is_the_generate_json_record(service, scans, tiny_model_and_processor):
    model, processor = tiny_model_and_processor
    analysis = service.analyze(scans["nifti"])
    record = analysis.record
    validate_record(record)
    assert record["scan"] == "chest.nii.gz" and record["model"] == "tiny-test"
    expected = generate_reports(model, processor, [str(scans["nifti"])], max_new_tokens=12)[0]
    assert record["report"] == expected["report"] and record["diagnoses"] == expected["diagnoses"]
    names = list(model.config.disease_names)
    assert analysis.disease_names == names
    h, w, d = model.config.vision_config.grid_size
    assert analysis.attention.shape == (len(names), h, w, d)
    assert analysis.attention.min() == 0 and np.allclose(analysis.attention.reshape(len(names), -1).max(1), 1)
    table = analysis.table()
    assert [row[0] for row in table] == names
    assert all(row[2] == 0.5 for row in table if row[0] != "no finding")
    assert table[names.index("no finding")][2] == "derived"  # the tiny preset derives "no finding"
    assert [row[3] == "present" for row in table] == [dx["present"] for dx in record["diagnoses"]]
    assert analysis.default_disease() != "no finding"
    assert analysis.volume.shape == scans["hu"].shape and analysis.volume.is_hu


def test_handler_dicom_zip_gives_the_same_diagnoses(service, scans):
    from_nifti = service.analyze(scans["nifti"]).record
    from_zip = service.analyze(scans["zip"]).record
    assert from_zip["scan"] == "chest_dicom.zip"
    assert from_zip["diagnoses"] == from_nifti["diagnoses"] and from_zip["report"] == from_nifti["report"]


def test_handler_errors_name_the_file(service, scans, tiny_model_and_processor):
    with pytest.raises(ScanError, match=r"^broken\.nii\.gz: "):
        service.analyze(scans["broken"])
    with pytest.raises(ScanError, match=r"^brain_mr\.nii\.gz: not a CT scan \(no air-like values.*--allow-non-ct"):
        service.analyze(scans["mr"])
    model, processor = tiny_model_and_processor
    lenient = ReportService(model, processor, "tiny-test", allow_non_ct=True, max_new_tokens=4)
    analysis = lenient.analyze(scans["mr"])
    validate_record(analysis.record)
    assert not analysis.volume.is_hu
    assert any("not a CT scan" in n for n in analysis.notes)
    assert any("min-max" in n for n in analysis.notes)  # the processor's warning, surfaced
    assert not any(str(scans["mr"].parent) in n for n in analysis.notes)  # named by file name only


def test_small_models_get_one_torch_thread_on_the_cpu(tiny_model_and_processor):
    from dia_llama.app import choose_num_threads

    model, _ = tiny_model_and_processor
    assert choose_num_threads(model, None) == 1  # ≈ 1 M parameters on the CPU
    assert choose_num_threads(model, 3) == 3
    big = torch.nn.Linear(10_000, 10_001)  # 100 M parameters
    assert choose_num_threads(big, None) is None


def test_cli_app_names_a_missing_model_in_one_line(tmp_path, capsys):
    from dia_llama.cli import main

    assert main(["app", str(tmp_path / "no_model"), "--port", "9"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dia-llama: error:") and "\n" not in err
    assert "no_model" in err or "pip install 'dia-llama[app]'" in err


# ---------------------------------------------------------------------------------------------------------------------
# The app, started by the CLI on a free loopback port


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_url(tiny_model_dir, tmp_path_factory):
    """`dia-llama app TINY --port P` in a subprocess (the real entry point); its URL once it answers."""
    try:
        import gradio  # noqa: F401
        import gradio_client  # noqa: F401
    except ImportError as err:
        require(False, f"the app needs Gradio: pip install 'dia-llama[app]' ({err})")
    root = tmp_path_factory.mktemp("app_server")
    port = free_port()
    log = root / "server.log"
    env = dict(os.environ, GRADIO_TEMP_DIR=str(root / "gradio"), PYTHONUNBUFFERED="1")
    src = Path(__file__).resolve().parents[1] / "src"
    env["PYTHONPATH"] = os.pathsep.join([str(src), *filter(None, [env.get("PYTHONPATH")])])
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "dia_llama", "app", str(tiny_model_dir), "--host", "127.0.0.1",
                                 "--port", str(port)], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=root)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"dia-llama app exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"dia-llama app did not answer in {SERVER_START_TIMEOUT_S} s:\n{log.read_text()[-4000:]}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def client(app_url, tmp_path_factory):
    from gradio_client import Client

    return Client(app_url, verbose=False, download_files=str(tmp_path_factory.mktemp("client_downloads")))


@pytest.fixture(scope="module")
def api_results(client, scans):
    """The /generate endpoint on the NIfTI and on the DICOM zip (called once each, shared by the tests)."""
    from gradio_client import handle_file

    return {kind: client.predict(handle_file(str(scans[kind])), api_name="/generate") for kind in ("nifti", "zip")}


def test_api_generate_on_nifti_and_dicom_zip(api_results, tiny_model_and_processor, scans):
    model, processor = tiny_model_and_processor
    names = list(model.config.disease_names)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the app runs a small model
    try:
        expected = ReportService(model, processor, "x").analyze(scans["nifti"]).record  # the 300-token default
    finally:
        torch.set_num_threads(threads)
    for kind, (report, diagnoses) in api_results.items():
        assert isinstance(report, str) and report.strip(), kind
        validate_record({"scan": kind, "report": report, "diagnoses": diagnoses, "model": "m"})
        assert [d["disease"] for d in diagnoses] == names
        for got, want in zip(diagnoses, expected["diagnoses"]):  # another process: allow for rounding
            assert got["present"] == want["present"] and got["probability"] == pytest.approx(want["probability"],
                                                                                             abs=1e-4)
        assert report == expected["report"], kind


def test_api_bad_file_is_an_error_and_the_next_request_works(client, scans, api_results):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match=r"broken\.nii\.gz: "):
        client.predict(handle_file(str(scans["broken"])), api_name="/generate")
    with pytest.raises(AppError, match=r"brain_mr\.nii\.gz: not a CT scan"):
        client.predict(handle_file(str(scans["mr"])), api_name="/generate")
    report, diagnoses = client.predict(handle_file(str(scans["nifti"])), api_name="/generate")
    assert (report, diagnoses) == api_results["nifti"]


def test_browser_upload_report_overlay_and_screenshot(app_url, scans, api_results, tmp_path):
    """Headless Chromium: load the page (no request leaves the loopback), upload a scan, wait for the report, switch
    the overlay's disease, turn the overlay off, change the window, download the record, show an error for a bad
    file, then run an example case; a screenshot lands in tmp_path."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as err:
        require(False, f"the browser test needs Playwright: pip install playwright ({err})")
    require(Path(CHROMIUM).exists(), f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    outside: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1500, "height": 1150}, accept_downloads=True)
        page = context.new_page()
        page.set_default_timeout(90_000)

        def note_request(request):
            if not request.url.startswith((app_url.rstrip("/"), "data:", "blob:")):
                outside.append(request.url)

        page.on("request", note_request)
        try:
            page.goto(app_url)
            page.wait_for_selector("#scan-upload input[type=file]", state="attached")
            page.set_input_files("#scan-upload input[type=file]", str(scans["nifti"]))
            page.wait_for_function("() => document.querySelector('#report textarea')?.value.length > 0")
            assert page.input_value("#report textarea") == api_results["nifti"][0]
            assert "chest.nii.gz: report generated in" in page.inner_text("#status")
            assert page.locator("#diagnoses [role=row]").count() == 1 + len(api_results["nifti"][1])  # + header
            table_text = page.inner_text("#diagnoses")
            assert all(d["disease"] in table_text for d in api_results["nifti"][1])
            assert not page.is_visible("#reference")  # an upload has no reference report

            def axial_src() -> str:
                return page.get_attribute("#view-axial img", "src")

            def wait_for_new_axial(previous: str) -> str:
                page.wait_for_function("(s) => document.querySelector('#view-axial img')?.src !== s", arg=previous)
                return axial_src()

            first = axial_src()
            shown = page.input_value("#disease input")
            other = next(d["disease"] for d in api_results["nifti"][1] if d["disease"] not in (shown, "no finding"))
            page.click("#disease input")
            page.locator("ul[role=listbox] li", has_text=other).first.click()
            switched = wait_for_new_axial(first)
            assert page.input_value("#disease input") == other
            page.click("#overlay input")  # overlay off
            plain = wait_for_new_axial(switched)
            page.locator("#window label", has_text="bone").click()
            bone = wait_for_new_axial(plain)
            page.fill("#slider-axial input[type=number]", "5")  # another axial slice
            page.press("#slider-axial input[type=number]", "Enter")
            wait_for_new_axial(bone)
            page.locator("#window label", has_text="mediastinum").click()
            page.click("#overlay input")  # overlay back on for the screenshot
            page.wait_for_timeout(500)
            page.screenshot(path=str(tmp_path / "app.png"), full_page=True)

            with page.expect_download() as download:
                page.click("#download")
            record = json.loads(Path(download.value.path()).read_text())
            validate_record(record)
            assert record["scan"] == "chest.nii.gz" and record["report"] == api_results["nifti"][0]

            page.click("#scan-upload button[aria-label=Clear]")  # the upload box holds one file: clear it first
            page.wait_for_function("() => document.querySelector('#status')?.innerText.startsWith('Upload a scan')")
            assert page.input_value("#report textarea") == ""
            page.set_input_files("#scan-upload input[type=file]", str(scans["broken"]))
            page.wait_for_function("() => document.querySelector('#status')?.innerText.includes('Error')")
            assert "broken.nii.gz" in page.inner_text("#status")
            assert page.input_value("#report textarea") == ""

            page.locator("button", has_text=EXAMPLE_CASES[1].label).first.click()  # still serving; works offline
            page.wait_for_function("() => document.querySelector('#report textarea')?.value.length > 0")
            assert f"{EXAMPLE_CASES[1].name}.nii.gz: report generated" in page.inner_text("#status")
            assert "nodule" in page.input_value("#reference textarea").lower()  # the phantom's own report
        finally:
            page.screenshot(path=str(tmp_path / "app_last.png"), full_page=True)
            browser.close()
    assert (tmp_path / "app.png").stat().st_size > 10_000
    assert outside == [], f"the page requested addresses outside the loopback: {outside}"
