"""Reports of ``emvos speed``: tables for the terminal, ``docs/performance.md``, and ``speed.json`` / ``.csv``.

Everything here works from the JSON summary alone (:class:`emvos.benchmarking.sweep.SpeedRun` writes
it), so a report can be rendered again from an earlier run's ``speed.json``.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from emvos.io.files import write_text_atomically

#: The official implementation's timings quoted when it is not run: seconds per frame by objects.
OFFICIAL_REFERENCE = {
    "source": "reference timings, not this run and maybe not this CPU: the official EMVOS code on "
              "a 2-core CPU, 480p DAVIS frames, random weights, model time only",
    "resolution": 480,
    "seconds_per_frame": {1: 0.91, 3: 1.54},
}
#: The speed targets emvos is measured against.
TARGET_SPEEDUP_FP32 = 2.0
TARGET_SPEEDUP_FASTEST = 4.0
TARGET_RSS_RATIO = 1.05
TARGET_JF_POINTS = 0.3
TARGET_GPU_FPS = 300.0

Table = tuple[str, list[str], list[list[str]]]


def _num(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _work(value: float | None) -> str:
    """GFLOPs and GFLOP/s: whole numbers from 100 on, else 3 significant digits."""
    if value is None:
        return "–"
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _mode_order(summary: dict) -> list[str]:
    return list(summary["settings"]["modes"])


def _agreement(cell: dict, reference: str) -> str:
    if cell["mode"] == reference:
        return "reference"
    if cell["agreement"] is None:
        return "–"
    return f"{cell['agreement']:.3f} ({cell['agreement_frames']} frames)"


def official_timings(summary: dict) -> dict | None:
    """The official implementation's seconds per frame: this run's, else the reference timings where they apply.

    The reference applies to CPU runs whose grid has its resolution (480p). Keys are object counts.
    """
    official = summary.get("official")
    if official:
        return {**official, "seconds_per_frame": {int(k): v for k, v in official["seconds_per_frame"].items()}}
    settings = summary["settings"]
    if summary["machine"]["device"] == "cpu" and OFFICIAL_REFERENCE["resolution"] in settings["resolutions"]:
        return OFFICIAL_REFERENCE
    return None


def _cells(summary: dict, **match: object) -> list[dict]:
    return [c for c in summary["cells"] if all(c.get(k) == v for k, v in match.items())]


def _speedups(summary: dict) -> tuple[dict | None, dict[tuple[int, str], float]]:
    """Official timings and, per (objects, mode), the paper model's model-only fps over the official fps."""
    official = official_timings(summary)
    if official is None:
        return None, {}
    ratios = {}
    for objects, seconds in official["seconds_per_frame"].items():
        for cell in _cells(summary, model="paper", resolution=official["resolution"], objects=objects):
            ratios[objects, cell["mode"]] = cell["model_fps"] * seconds
    return official, ratios


def targets(summary: dict) -> list[list[str]]:
    """The speed targets that this summary can check: target, measured, met."""
    rows = []
    official, ratios = _speedups(summary)
    default, reference = summary["settings"]["default_mode"], summary["settings"]["reference_mode"]
    if official is not None and summary["machine"]["device"] == "cpu":  # the speed-up targets are set on the CPU
        label = "this run" if summary.get("official") else "reference timings"
        for objects in (1, 3):
            if (objects, default) in ratios:
                value = ratios[objects, default]
                rows.append([f"{default} >= {TARGET_SPEEDUP_FP32:g}x official, {objects} object(s), "
                             f"{official['resolution']}p ({label})", f"{value:.2f}x",
                             "yes" if value >= TARGET_SPEEDUP_FP32 else "no"])
            fastest = max(((r, m) for (o, m), r in ratios.items() if o == objects and m not in (reference, default)),
                          default=None)
            if fastest is not None:
                rows.append([f"fastest opt-in mode >= {TARGET_SPEEDUP_FASTEST:g}x official, {objects} object(s) "
                             f"({label})", f"{fastest[0]:.2f}x ({fastest[1]})",
                             "yes" if fastest[0] >= TARGET_SPEEDUP_FASTEST else "no"])
    lengths = summary.get("lengths")
    if lengths and len(lengths["rows"]) > 1:
        first, last = lengths["rows"][0], lengths["rows"][-1]
        rows.append([f"peak RSS of {last['frames']} frames within {100 * (TARGET_RSS_RATIO - 1):.0f} % of "
                     f"{first['frames']}", f"{lengths['rss_ratio']:.3f}x",
                     "yes" if lengths["rss_ratio"] <= TARGET_RSS_RATIO else "no"])
    davis_rows = summary["davis"]["rows"] if summary.get("davis") else []
    for model in sorted({r["model"] for r in davis_rows}):
        scores = {r["mode"]: r["J&F-Mean"] for r in davis_rows if r["model"] == model}
        cells = [c for c in _cells(summary, model=model, objects=1, resolution=min(summary["settings"]["resolutions"]))
                 if c["mode"] in scores and c["mode"] not in (reference, default)]
        if default in scores and cells:
            fastest = max(cells, key=lambda c: c["model_fps"])["mode"]
            delta = 100 * (scores[fastest] - scores[default])
            rows.append([f"{model}: J&F of the fastest opt-in mode within {TARGET_JF_POINTS} of {default}",
                         f"{delta:+.2f} ({fastest})", "yes" if abs(delta) <= TARGET_JF_POINTS else "no"])
    if summary["machine"]["device"].startswith("cuda"):
        cells = _cells(summary, model="paper", resolution=480, objects=1)
        if cells:
            best = max(cells, key=lambda c: c["model_fps"])
            rows.append([f"paper model >= {TARGET_GPU_FPS:g} fps, 480p, 1 object ({summary['machine'].get('gpu')})",
                         f"{best['model_fps']:.0f} fps ({best['mode']})",
                         "yes" if best["model_fps"] >= TARGET_GPU_FPS else "no"])
    return rows


def tables(summary: dict) -> list[Table]:
    """The report's tables: title, header and rows of text cells."""
    out: list[Table] = []
    modes, reference = _mode_order(summary), summary["settings"]["reference_mode"]
    peak = summary["peak"]
    if peak:
        precisions = [k for k in peak if "-" not in k]
        out.append(("Measured peak (GFLOP/s)", ["precision", "matmul", "3x3 conv (channels-last)", "peak"],
                    [[p, _work(peak[f"matmul-{p}"]), _work(peak[f"conv3x3-{p}"]), _work(peak[p])]
                     for p in precisions]))
    if summary["flops"]:
        out.append(("Work per propagated frame (GFLOPs)",
                    ["model", "resolution", "objects", "total", "encoder", "decoder, per-object part",
                     "keys, matching, shared decoder part"],
                    [[f["model"], f"{f['resolution']}p", str(f["objects"]), _work(f["gflops_per_frame"]),
                      _work(f["encoder_gflops"]), _work(f["decoder_gflops"]), _work(f["other_gflops"])]
                     for f in summary["flops"]]))
    vram = any("peak_vram_mb" in c for c in summary["cells"])
    for model in summary["models"]:
        cells = sorted(_cells(summary, model=model),
                       key=lambda c: (c["resolution"], c["objects"], modes.index(c["mode"])))
        if not cells:
            continue
        header = ["resolution", "objects", "mode", "model fps", "end-to-end fps", "GFLOP/s", "% of peak",
                  "peak RSS MiB", *(["peak VRAM MiB"] if vram else []), f"% pixels = {reference}"]
        rows = [[f"{c['resolution']}p", str(c["objects"]), c["mode"], _num(c["model_fps"]), _num(c["end_to_end_fps"]),
                 _work(c["gflops_per_s"]), _num(100 * c["peak_fraction"], 1), _num(c["peak_rss_mb"], 0),
                 *([_num(c.get("peak_vram_mb"), 0)] if vram else []), _agreement(c, reference)]
                for c in cells]
        out.append((f"Speed: {summary['models'][model]['title']}, {summary['models'][model]['weights']} weights",
                    header, rows))
    official, ratios = _speedups(summary)
    if official is not None:
        timed = [m for m in modes if any(k[1] == m for k in ratios)]
        official_work = {r["objects"]: r["gflops_per_frame"] for r in official.get("rows", [])}
        work = {f["objects"]: f["gflops_per_frame"] for f in summary["flops"]
                if f["model"] == "paper" and f["resolution"] == official["resolution"]}
        fp32_peak = (peak or {}).get("fp32")
        default = summary["settings"]["default_mode"]
        huge = {int(k): v for k, v in official.get("tuned_seconds_per_frame", {}).items()}
        rows = [[str(o), _num(s, 3), _num(1 / s, 2), _work(official_work.get(o)), _work(work.get(o)),
                 *[f"{ratios[o, m]:.2f}x" if (o, m) in ratios else "–" for m in timed],
                 f"{s * fp32_peak / work[o]:.2f}x" if fp32_peak and work.get(o) else "–",
                 *([_num(huge.get(o), 3), f"{ratios[o, default] * huge[o] / s:.2f}x"
                    if o in huge and (o, default) in ratios else "–"] if huge else [])]
                for o, s in sorted(official["seconds_per_frame"].items())]
        title = (f"Speed-up of the paper model over the official implementation, {official['resolution']}p, "
                 f"model only ({official['source']}); `{default} at peak`: the speed-up of {default} emvos doing its "
                 f"direct-convolution work at 100 % of the measured {default} peak (Winograd, doing less, "
                 "can pass it)")
        if huge:
            title += (f"; the last two columns: the official implementation with emvos's process settings too, "
                      f"and {default} over it")
        out.append((title, ["objects", "official s/frame", "official fps", "official GFLOPs", "emvos GFLOPs", *timed,
                            f"{default} at peak",
                            *(["official s/frame, same settings", f"{default} over that"] if huge else [])], rows))
    lengths = summary.get("lengths")
    if lengths:
        rows = [[str(r["frames"]), _num(r["model_fps"]), _num(r["end_to_end_fps"]), _num(r["peak_rss_mb"], 1)]
                for r in lengths["rows"]]
        out.append((f"Video length: {lengths['model']}, {lengths['resolution']}p, {lengths['objects']} object, "
                    f"{lengths['mode']}, end to end; peak RSS {lengths['rss_ratio']:.3f}x from the shortest to the "
                    "longest", ["frames", "model fps", "end-to-end fps", "peak RSS MiB"], rows))
    davis = summary.get("davis")
    if davis and davis["rows"]:
        base = {r["model"]: r["J&F-Mean"] for r in davis["rows"] if r["mode"] == reference}
        rows = [[r["model"], r["mode"], _num(100 * r["J&F-Mean"]), _num(100 * r["J-Mean"]), _num(100 * r["F-Mean"]),
                 _num(100 * (r["J&F-Mean"] - base[r["model"]])) if r["model"] in base else "–",
                 _num(r["model_fps"])]
                for r in davis["rows"]]
        out.append((f"DAVIS {davis['year']} J&F (x100): {', '.join(davis['sequences'])}",
                    ["model", "mode", "J&F", "J", "F", f"ΔJ&F vs {reference}", "model fps"], rows))
    target_rows = targets(summary)
    if target_rows:
        out.append(("Targets", ["target", "measured", "met"], target_rows))
    return out


def format_text(summary: dict) -> str:
    """The tables as aligned plain text, for the terminal."""
    blocks = []
    for title, header, rows in tables(summary):
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        lines = [title, "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
        lines += ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
                  for r in rows]
        blocks.append("\n".join(lines))
    blocks += [f"note: {n}" for n in summary["notes"]]
    return "\n\n".join(blocks)


def _process_settings(machine: dict) -> str:
    """How the run's large CPU tensors were allocated (runs from before it was recorded: unknown)."""
    if "huge_pages" not in machine:
        return "not recorded."
    settings = []
    if machine["huge_pages"]:
        settings.append("huge pages (`THP_MEM_ALLOC_ENABLE=1`, `emvos.runtime.use_huge_pages`): PyTorch backs CPU "
                        "tensors of 2 MiB and more with transparent huge pages")
    if machine.get("freed_memory_kept"):
        settings.append("freed memory kept (`MALLOC_MMAP_THRESHOLD_` and `MALLOC_TRIM_THRESHOLD_` at 1 GiB, "
                        "`emvos.runtime.keep_freed_memory`): glibc serves large tensors from memory the process "
                        "already has instead of fresh pages that the kernel must fault in and zero, so after the "
                        "first frames no frame pays a page fault")
    if not settings:
        return "PyTorch's and glibc's defaults."
    return ("as every `emvos` command sets them: " + "; ".join(settings) + ". The official implementation is "
            "timed in processes of its own: as it runs by itself, with the defaults (the speed-ups and targets use "
            "this), and with the same settings (the last columns).")


def _cuda_settings(machine: dict) -> str:
    """How PyTorch computed fp32 on the GPU, and what cuDNN's autotuning does to peak VRAM."""
    convs = "TF32" if machine.get("cudnn_allow_tf32", True) else "fp32"
    matmuls = "TF32" if machine.get("matmul_allow_tf32", False) else "fp32"
    return (f"`fp32` modes ran convolutions in {convs} (`torch.backends.cudnn.allow_tf32`, on by default in "
            f"PyTorch; the measured fp32 3x3 conv peak shows it) and matrix products in {matmuls} "
            "(`torch.backends.cuda.matmul.allow_tf32`). The `emvos` command turns on cuDNN's autotuning "
            "(`torch.backends.cudnn.benchmark`): the first frame of each new shape tries cuDNN's algorithms, "
            "some with workspaces of gigabytes, so the first mode to meet a shape shows them in its peak VRAM.")


def format_markdown(summary: dict) -> str:
    """``docs/performance.md``: the command, the machine, how it was measured, and the tables."""
    machine = summary["machine"]
    s = summary["settings"]
    device = machine["device"] + (f" ({machine['gpu']})" if "gpu" in machine else "")
    lines = [
        "# Performance",
        "",
        "<!-- Generated by `emvos speed --doc` from speed.json; edit the generator, not this file. -->",
        "",
        f"Measured {summary['date']} in {summary['elapsed_s'] / 60:.0f} minutes with:",
        "",
        "```bash",
        summary["command"],
        "```",
        "",
        f"- Machine: {machine['cpu']} ({machine['cpu_capability']}), {machine['cores']} cores "
        f"({machine['available_cpus']} available), {machine['threads']} PyTorch threads; device {device}.",
        f"- Software: PyTorch {machine['torch']}, Python {machine['python']}, {machine['platform']}.",
        "- Models: " + "; ".join(f"`{k}` = {m['title']}, {m['parameters'] / 1e6:.1f} M parameters, "
                                  f"{m['weights']} weights" for k, m in summary["models"].items()) + ".",
        "",
        "How it is measured (`src/emvos/benchmarking/`):",
        "",
        "- **Model fps**: `VideoPredictor.step_many` on synthetic 16:9 frames generated in memory (a panning "
        "texture with moving discs, the first `objects` discs given in frame 0), in chunks of the mode's lookahead "
        f"(one frame unless `+lookahead`), after {s['warmup']} warm-up chunk(s) (one more for compiled and "
        "graphed modes), over enough frames to fill "
        f"{s['cell_seconds']:g} s "
        f"({s['min_frames']} to {s['max_frames']}).",
        "- **End-to-end fps**: as many frames of the same scene decoded from an mp4 on a background "
        "thread and written as PNGs, wall time from opening the video to the last PNG (the given first "
        "frame included). With random weights the masks of several objects are noise, and a PNG of noise "
        "takes several times longer to encode than one of real masks: such cells' end-to-end fps measure the "
        "PNG encoder more than the model.",
        "- **GFLOPs** of a propagated frame from `torch.utils.flop_counter` (matmuls and convolutions, 2 FLOPs "
        "per multiply-add), counted on the unoptimised network: the work of direct convolutions. The "
        "optimised modes compute the decoder's wide 3x3 convolutions by Winograd F(6x6, 3x3), with "
        "fewer multiplies, so their GFLOP/s are effective rates. **GFLOP/s** = GFLOPs x model fps; "
        "**% of peak** against the best measured "
        "kernel (matmul or channels-last 3x3 conv) of the mode's precision, measured in the same run. The "
        "Lite0 encoder's stride-2 layers carry a zero row and column in their kernels (TensorFlow "
        "\"SAME\" padding without a padded copy of the input), and the counter counts those multiplies too.",
        "- **Repeatability**: each cell is timed once, over a few seconds. On a machine shared with other "
        "work the speed drifts from minute to minute, so compare cells of the same run and read small "
        "differences as noise.",
        "- **Peak RSS** per cell (the Linux high-water mark, reset before each cell), whole process.",
        f"- **% pixels = {s['reference_mode']}**: identical pixels with the unoptimised fp32 network on the end-to-end "
        "frames after the first. With random weights the decoder's outputs are nearly tied, so rounding "
        "flips more pixels than it would with trained weights.",
        "- Modes: `fp32-unopt` = the network as trained, in PyTorch's default memory format; `fp32` = the "
        "default, a copy prepared for inference: BatchNorm folded into the convolutions, convolutions and "
        "their ReLUs as one oneDNN call, DenseNet's blocks written into one output, channels-last, and on the "
        "CPU the wide decoder levels' Winograd convolutions and matrix-product upsampling; `bf16`/`fp16` = "
        "autocast; `+compile` = `torch.compile` of the encoder and decoder; `graph` = `fp32` with each "
        "propagated frame replayed from a CUDA graph (CUDA only; `bf16+graph`, `fp16+graph` likewise); "
        "`+lookahead` = frames read 8 at a time, their encoder, key projections and the decoder's "
        "object-independent part computed as one batch (`--lookahead 8`), matching and decoding frame by frame.",
        f"- **Process settings**: {_process_settings(machine)}",
        *([f"- **On CUDA**: {_cuda_settings(machine)}"] if machine["device"].startswith("cuda") else []),
        "",
    ]
    for title, header, rows in tables(summary):
        lines += [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        lines.append("")
    if not summary.get("official") and machine["device"] == "cpu":
        lines += ["The official implementation was not run (`--official-repo`); speed-ups use the "
                  "reference timings where they apply, which come from another run, perhaps on another "
                  "CPU.", ""]
    elif not summary.get("official"):
        lines += ["The official implementation was not timed in this run (`--official-repo`).", ""]
    lines += ["Re-render this page from the run's JSON without measuring again: "
              "`emvos speed --from-json OUT/speed.json --doc FILE`, OUT being the run's `--out` folder and "
              "FILE this page.", ""]
    if summary["notes"]:
        lines += ["## Notes", ""] + [f"- {n}" for n in summary["notes"]] + [""]
    return "\n".join(lines)


def cells_csv(summary: dict) -> str:
    """One row per cell."""
    columns = ["model", "mode", "resolution", "objects", "frames", "model_fps", "end_to_end_fps",
               "gflops_per_frame", "gflops_per_s", "peak_fraction", "peak_rss_mb", "peak_vram_mb", "agreement",
               "agreement_frames"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(summary["cells"])
    return buffer.getvalue()


def write_outputs(summary: dict, out: Path) -> None:
    """``OUT/speed.json`` and ``OUT/speed.csv``."""
    write_text_atomically(out / "speed.json", json.dumps(summary, indent=1))
    write_text_atomically(out / "speed.csv", cells_csv(summary))


