"""Command ``bench`` (not a DVC stage: timings differ between runs): time prediction and training."""

from __future__ import annotations

from pathlib import Path

import typer

from fetalbio.commands._common import friendly_errors

app = typer.Typer(add_completion=False)


@app.command()
@friendly_errors(ValueError, FileNotFoundError)
def main(
    model: list[Path] = typer.Option(..., help="Model file exported by the final stage (or its ONNX form X.onnx); repeat to time several side by side."),
    images: Path = typer.Option(Path("data/sample/images"), help="Folder of images to time on."),
    n_images: int = typer.Option(16, min=1, help="How many of its images (sorted by name)."),
    threads: int = typer.Option(2, min=1, help="CPU threads for torch and ONNX Runtime."),
    runtime: str = typer.Option("both", help="both (torch and, where the model has its ONNX form, ONNX Runtime) | torch | onnx."),
    rounds: int = typer.Option(3, min=1, help="Rounds over the images; the entries are interleaved in each."),
    batch_sizes: str = typer.Option("1,4,8,16", help="Batch sizes for the throughput figure."),
    train: bool = typer.Option(True, help="Also time a training step (torch)."),
    cuda: bool = typer.Option(True, help="Also time torch on CUDA when present."),
    out: Path = typer.Option(Path("metrics/bench.json"), help="Output JSON."),
) -> None:
    """Time predict on the CPU (N threads): every model on torch and ONNX Runtime, interleaved on
    the same images; ONNX Runtime / torch ratios per model; the GPU (torch) when present."""
    from fetalbio.inference.bench import run_bench
    from fetalbio.inference.predictor import collect_images
    from fetalbio.io import write_json

    try:
        sizes = [int(b) for b in batch_sizes.split(",") if b.strip()]
    except ValueError:
        raise ValueError(f"--batch-sizes must be comma-separated integers, got {batch_sizes!r}") from None
    if not sizes or min(sizes) < 1:
        raise ValueError(f"--batch-sizes must be positive, got {batch_sizes!r}")
    if len(set(model)) != len(model):
        raise ValueError(f"a --model is given twice: {', '.join(map(str, model))}")
    paths, _ = collect_images([images])
    result = run_bench(model, paths[:n_images], threads, sizes, cuda, runtime=runtime, rounds=rounds, train=train,
                       on_note=lambda s: typer.secho(f"note: {s}", fg=typer.colors.YELLOW, err=True))
    write_json(out, result)
    for row in result["models"]:
        parts = []
        for rt, f in row["runtimes"].items():
            parts.append(f"{rt} {f['model_ms_per_image_batch1']:.1f} ms/image (forward {f['forward_ms_batch1']:.1f} + post {f['postprocess_ms_batch1']:.1f}), "
                         f"best {f['best_images_per_s']:.1f} img/s at batch {f['best_batch']}")
        ratio = row.get("onnx_over_torch")
        tail = f"; ONNX Runtime / torch: forward {ratio['forward_ms_batch1']:.2f}x, per image {ratio['model_ms_per_image_batch1']:.2f}x" if ratio else ""
        gpu = f"; GPU {row['cuda']['model_ms_per_image_batch1']:.1f} ms/image" if row.get("cuda") else ""
        typer.echo(f"bench {row['model']} ({row['method']}), CPU x{threads}, batch 1: " + "; ".join(parts) + tail + gpu)
    typer.echo(f"bench: {len(result['models'])} model(s), {result['n_images']} images x {rounds} rounds -> {out}")
