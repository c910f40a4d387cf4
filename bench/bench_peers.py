"""The peers' environments and the files they are handed, so that every system runs the same weights.

Each peer lives in its own venv outside the repository (``$EARMARK_PEERS``, by default
``../peers`` beside the checkout), with pinned versions:

- ``whisper-at``: the original Whisper-AT code, the ``whisper-at`` 0.5 wheel installed with
  ``--no-deps`` (it pins triton 2.0.0 and tiktoken 0.3.3, and triton is CUDA-only), the CPU build
  of torch 2.13.0, and what it imports: numpy, numba, tiktoken, tqdm, more-itertools, at the
  versions Earmark's venv has.
- ``faster-whisper``: faster-whisper 1.2.1 and CTranslate2 4.8.5 (no torch).

Files (in the benchmark cache, ``$EARMARK_BENCH_CACHE`` or ``~/.cache/earmark-bench``):

- a Whisper-AT "download root" with ``NAME.pt`` linked to Earmark's converted checkpoint and
  ``NAME_ori.pth`` (``NAME_low.pth`` for TL-Tr-512) holding the head in the official key layout
  (``at_model.`` + TL-Tr keys): ``whisper_at.load_model(NAME, download_root=ROOT)`` finds both
  and downloads nothing. Earmark loads the same ``.pth`` with ``tagger.heads.load_head``.
- a CTranslate2 folder per model for faster-whisper: the bundled package's files; for base the
  two parts joined into model.bin (sha256 checked against tagger.weights.BUNDLED_MODELS).

Run: .venv/bin/python bench/bench_peers.py setup     # create or update both venvs
     .venv/bin/python bench/bench_peers.py check     # show what is installed
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TORCH = "torch==2.13.0"  # the local CPU build; any other torch requirement downloads CUDA wheels
PEER_PACKAGES = {
    "whisper-at": {
        "no_deps": ["whisper-at==0.5"],
        "deps": ["numpy==2.4.6", "numba==0.68.1", "llvmlite==0.50.0", "tiktoken==0.14.0", "tqdm==4.70.1",
                 "more-itertools==11.2.1"],
        "torch": True,
    },
    "faster-whisper": {
        "no_deps": [],
        "deps": ["faster-whisper==1.2.1", "ctranslate2==4.8.5"],
        "torch": False,
    },
}


def peers_dir() -> Path:
    return Path(os.environ.get("EARMARK_PEERS") or ROOT.parent / "peers").resolve()


def peer_python(name: str) -> Path:
    return peers_dir() / name / "bin" / "python"


def available(name: str) -> str | None:
    """None when the peer's venv is usable, else why not."""
    python = peer_python(name)
    if not python.is_file():
        return f"no venv at {python.parent.parent} (run: .venv/bin/python bench/bench_peers.py setup)"
    module = {"whisper-at": "whisper_at", "faster-whisper": "faster_whisper"}[name]
    result = subprocess.run([str(python), "-c", f"import {module}"], capture_output=True, text=True, check=False)
    if result.returncode:
        return f"{python} cannot import {module}: {result.stderr.strip().splitlines()[-1:]}"
    return None


def setup(names: list[str]) -> None:
    for name in names:
        spec = PEER_PACKAGES[name]
        venv = peers_dir() / name
        python = venv / "bin" / "python"
        if not python.is_file():
            venv.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(python), "-m", "pip", "install", "--quiet"]
        if spec["torch"]:
            subprocess.run([*pip, TORCH], check=True)
        if spec["deps"]:
            # torch is pinned as a constraint too, so that nothing can pull another build of it
            subprocess.run([*pip, *spec["deps"], *([TORCH] if spec["torch"] else [])], check=True)
        if spec["no_deps"]:
            subprocess.run([*pip, "--no-deps", *spec["no_deps"]], check=True)
        print(f"{name}: {venv}", flush=True)
    check(names)


def check(names: list[str]) -> None:
    for name in names:
        problem = available(name)
        if problem:
            print(f"{name}: {problem}")
            continue
        modules = {"whisper-at": ["whisper-at", "torch", "numpy", "numba", "tiktoken"],
                   "faster-whisper": ["faster-whisper", "ctranslate2", "numpy", "onnxruntime", "av"]}[name]
        code = ("from importlib.metadata import version;"
                f"print(', '.join(f'{{m}} {{version(m)}}' for m in {modules!r}))")
        result = subprocess.run([str(peer_python(name)), "-c", code], capture_output=True, text=True, check=False)
        print(f"{name}: {result.stdout.strip() or result.stderr.strip()}")


def versions(name: str) -> dict[str, str]:
    modules = {"whisper-at": ["whisper-at", "torch", "numpy", "numba", "tiktoken"],
               "faster-whisper": ["faster-whisper", "ctranslate2", "numpy", "onnxruntime"]}[name]
    code = ("import json; from importlib.metadata import version;"
            f"print(json.dumps({{m: version(m) for m in {modules!r}}}))")
    result = subprocess.run([str(peer_python(name)), "-c", code], capture_output=True, text=True, check=False)
    import json

    return json.loads(result.stdout) if result.returncode == 0 else {}


# --------------------------------------------------------------------------- files the peers get


def seeded_head_pth(model: str, out: Path, head_type: str = "tl_tr", seed: int = 0) -> Path:
    """A TL-Tr (or TL-Tr-512) of the published shape with seeded weights, saved in the official
    Whisper-AT layout: a state dict with ``at_model.`` keys. Its cost is that of any trained head
    of the same type; its tags mean nothing."""
    import torch

    from tagger.heads import WHISPER_ENCODERS, create_head

    family = model.split(".")[0].split("-")[0]
    n_layers, d_model = WHISPER_ENCODERS[family]
    torch.manual_seed(seed)
    module = create_head(head_type, n_layers, d_model).eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({f"at_model.{k}": v.detach().clone() for k, v in module.state_dict().items()}, out)
    return out


def official_head(model: str, head: str, cache: Path) -> tuple[Path, bool]:
    """A head file in the official layout for ``model``, and whether it is TL-Tr-512 (``_low``).

    ``head``: "seeded", an official ``.pth``, or an Earmark ``.safetensors`` TL-Tr / TL-Tr-512
    (converted: the official layout is the same keys under ``at_model.``)."""
    import torch

    from tagger.heads import load_head

    folder = cache / "heads"
    if head == "seeded":
        path = folder / f"seeded-{model}_ori.pth"
        if not path.is_file():
            seeded_head_pth(model, path)
        return path, False
    source = Path(head)
    loaded = load_head(source)
    if loaded.card.head_type not in ("tl_tr", "tl_tr_512"):
        raise SystemExit(f"whisper-at runs TL-Tr or TL-Tr-512 heads only; {source} is {loaded.card.head_type}")
    low = loaded.card.head_type == "tl_tr_512"
    if source.suffix.lower() in (".pth", ".pt"):
        return source.resolve(), low
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:12]
    path = folder / f"{source.stem}-{digest}{'_low' if low else '_ori'}.pth"
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        torch.save({f"at_model.{k}": v.detach().clone() for k, v in loaded.module.state_dict().items()}, path)
    return path, low


def whisper_at_root(model: str, checkpoint: Path, head_file: Path, low: bool, cache: Path) -> Path:
    """A folder where ``whisper_at.load_model(model, download_root=...)`` finds both files."""
    digest = hashlib.sha256(f"{checkpoint.resolve()}|{head_file.resolve()}".encode()).hexdigest()[:12]
    root = cache / "whisper-at-root" / f"{model}-{digest}"
    root.mkdir(parents=True, exist_ok=True)
    for name, target in ((f"{model}.pt", checkpoint), (f"{model}{'_low' if low else '_ori'}.pth", head_file)):
        link = root / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target.resolve())
    return root


def _package_file(package: str, relative: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"package {package} is not installed in Earmark's venv")
    return Path(next(iter(spec.submodule_search_locations))) / relative


def ct2_dir(model: str, cache: Path) -> Path:
    """The bundled CTranslate2 weights of ``model`` as one folder faster-whisper can load."""
    from tagger.weights import BUNDLED_MODELS

    bundle = BUNDLED_MODELS.get(model)
    if bundle is None:
        raise SystemExit(f"no bundled CTranslate2 weights for {model!r} (bundled: {', '.join(BUNDLED_MODELS)})")
    folder = cache / "ct2" / f"{model}-{bundle.sha256[:12]}"
    model_bin = folder / "model.bin"
    if not model_bin.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        parts = [_package_file(p, r) for p, r in bundle.parts]
        partial = folder / "model.bin.partial"
        digest = hashlib.sha256()
        with open(partial, "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    while chunk := f.read(1 << 20):
                        digest.update(chunk)
                        out.write(chunk)
        if digest.hexdigest() != bundle.sha256:
            partial.unlink()
            raise SystemExit(f"the bundled {model} weights do not match their pinned sha256")
        partial.rename(model_bin)
    config_package, config_relative = bundle.config
    config_dir = _package_file(config_package, config_relative).parent
    for name in ("config.json", "tokenizer.json", "vocabulary.txt", "preprocessor_config.json"):
        source, link = config_dir / name, folder / name
        if source.is_file() and not link.exists():
            shutil.copyfile(source, link)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("setup", "check"))
    parser.add_argument("--peers", nargs="*", default=list(PEER_PACKAGES), choices=list(PEER_PACKAGES))
    args = parser.parse_args()
    (setup if args.command == "setup" else check)(args.peers)


if __name__ == "__main__":
    main()
