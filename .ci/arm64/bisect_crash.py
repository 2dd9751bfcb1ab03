"""Where does the heap corruption under qemu-user come from? Runs each variant in a fresh process
REPS times and prints how each run ended (ok / the signal / the last line of its error).

Found with it (qemu-aarch64-static 7.2, -cpu cortex-a72, 3-4 runs each): not threads, not a
session option. A bare session at 1 or 2 threads with Classifier's options (bytes, no arena,
inter_op 1, log 3) and its cv2 preprocessing: 0 crashes; Classifier at 1 thread: 7/7 crashed.
The difference was read_regular's read(limit + 1): CPython allocates the whole limit (1 GiB)
and shrinks it to the model's 22 MB. `bigread` 2/3, `readreg` 3/3 (old read_regular), Classifier
with an exact-size read 0/8 (1 and 2 threads); `bigfree` (malloc 1 GiB, free, never touched)
3/3 and `mremap` 1/3 crashed a later session: qemu's emulation of the guest's memory mappings,
not onnxruntime. With qemu -R 64G (guest address space reserved up front, enter.sh's default)
`bigfree` 0/3 and Classifier 0/3, `bigread` still 3/3 (read_regular no longer does that).

    .ci/arm64/enter.sh --cpu cortex-a72 python .ci/arm64/bisect_crash.py --reps 3 VARIANT...
    python .ci/arm64/bisect_crash.py --list

A variant is a name followed by options, joined with '+': e.g. ``ort+t2+bytes+noarena``.
Bases:
  ort         a bare onnxruntime session on the shipped model, a fixed random input
  classifier  device.classifier.Classifier (its own session options), the self-test picture
Options (ort only, unless said):
  tN          intra-op threads N (both bases)
  bytes       load the model from bytes instead of a path (Path.read_bytes: exactly its size)
  bigread     load it from bytes read as device.safe_open.read_regular does: one read() of
              up to 1 GiB + 1 (CPython allocates the full 1 GiB buffer, then shrinks it)
  mremap      before loading (exactly-sized bytes), malloc 1 GiB and realloc it down to 22 MB
              with ctypes, never touching it: the allocate-then-shrink alone
  bigfree     before loading (exactly-sized bytes), malloc 1 GiB and free it (no shrink)
  readreg     load it from device.safe_open.read_regular itself (what Classifier does)
  noarena     enable_cpu_mem_arena = False
  inter1      inter_op_num_threads = 1
  log3        log_severity_level = 3
  nospin      session.intra_op.allow_spinning = 0
  exactread   (classifier) device.classifier.read_regular replaced by an exact-size read
  cv2         import cv2 first (both bases: cv2 is imported by classifier anyway)
  cv2t1       cv2.setNumThreads(1) first (both bases)
  pre         preprocess the self-test picture with device.contract.preprocess (cv2, numpy)
  npwork      numpy work between runs (float64 softmax, argsort: what Classifier does)
  runs=N      inferences after loading (default 3)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

MODEL = Path(__file__).resolve().parents[2] / "device" / "model" / "waste-sorter-resnet34-int8.onnx"


def child(variant: str) -> None:
    base, *opts = variant.split("+")
    flags = set(opts)
    threads = next((int(o[1:]) for o in opts if o[:1] == "t" and o[1:].isdigit()), 2)
    runs = next((int(o[5:]) for o in opts if o.startswith("runs=")), 3)
    if "cv2" in flags or "cv2t1" in flags:
        import cv2
        if "cv2t1" in flags:
            cv2.setNumThreads(1)
    import numpy as np
    if base == "classifier":
        sys.path.insert(0, str(MODEL.parents[2]))
        from device import selftest
        from device import classifier
        from device.classifier import Classifier
        if "exactread" in flags:
            classifier.read_regular = lambda path, **_: Path(path).read_bytes()
        clf = Classifier(MODEL, threads=threads)
        image = selftest.reference_image()
        for _ in range(runs):
            pred = clf.classify([image])
        print(f"label {pred.label} {pred.confidence:.4f}")
        return
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    if "inter1" in flags:
        so.inter_op_num_threads = 1
    if "log3" in flags:
        so.log_severity_level = 3
    if "noarena" in flags:
        so.enable_cpu_mem_arena = False
    if "nospin" in flags:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if "mremap" in flags or "bigfree" in flags:
        import ctypes
        libc = ctypes.CDLL(None)
        libc.malloc.restype = libc.realloc.restype = ctypes.c_void_p
        libc.realloc.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        libc.free.argtypes = [ctypes.c_void_p]
        block = libc.malloc(ctypes.c_size_t(1 << 30))
        if "mremap" in flags:
            block = libc.realloc(block, 22 << 20)  # glibc: mremap(MREMAP_MAYMOVE) of the mmapped chunk
        else:
            libc.free(block)
        flags.add("bytes")
    source = MODEL.read_bytes() if "bytes" in flags else str(MODEL)
    if "bigread" in flags:
        with open(MODEL, "rb") as fh:
            source = fh.read(1024 * 1024 * 1024 + 1)
    if "readreg" in flags:
        sys.path.insert(0, str(MODEL.parents[2]))
        from device.safe_open import read_regular
        from device.errors import ModelError
        source = read_regular(MODEL, what="model", error=ModelError, limit_bytes=1024 * 1024 * 1024)
    session = ort.InferenceSession(source, so, providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    if "pre" in flags:
        sys.path.insert(0, str(MODEL.parents[2]))
        import json
        from device import selftest
        from device.contract import KEY_CONTRACT, ModelContract, preprocess
        contract = ModelContract.from_json(session.get_modelmeta().custom_metadata_map[KEY_CONTRACT])
        x = preprocess(selftest.reference_image(), contract)[None]
    else:
        shape = [1 if not isinstance(d, int) else d for d in inp.shape]
        x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    for _ in range(runs):
        out = session.run(None, {inp.name: x})[0]
        if "npwork" in flags:
            z = out.astype(np.float64)
            e = np.exp(z - z.max(axis=1, keepdims=True))
            np.argsort(-(e / e.sum(axis=1, keepdims=True)).mean(axis=0))
    print(f"argmax {int(out.argmax())}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("variants", nargs="*")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--child")
    ap.add_argument("--list", action="store_true")
    args = ap.parse_args()
    if args.list:
        print(__doc__)
        return
    if args.child:
        child(args.child)
        return
    cpu = os.environ.get("ARM64_CPU", "host")
    for variant in args.variants:
        ends = []
        for _ in range(args.reps):
            start = time.monotonic()
            try:
                proc = subprocess.run([sys.executable, __file__, "--child", variant], capture_output=True,
                                      text=True, timeout=args.timeout)
                rc = proc.returncode
                out = proc.stdout.strip().splitlines()
                last = proc.stderr.strip().splitlines() + out[-1:]  # the child's result line last
            except subprocess.TimeoutExpired:
                rc, last = "timeout", []
            took = time.monotonic() - start
            if rc == 0:
                ends.append(f"ok({last[-1] if last else ''}; {took:.0f}s)")
            else:
                signal = f"signal {-rc}" if isinstance(rc, int) and rc < 0 else f"rc {rc}"
                why = next((line for line in last if "malloc" in line or "corrupt" in line or "free()" in line), "")
                ends.append(f"CRASH({signal}{'; ' + why if why else ''}; {took:.0f}s)")
        crashes = sum(e.startswith("CRASH") for e in ends)
        print(f"{cpu:11s} {variant:40s} {crashes}/{len(ends)} crashed: {' '.join(ends)}", flush=True)


if __name__ == "__main__":
    main()
