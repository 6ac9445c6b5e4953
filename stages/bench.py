"""Command ``bench`` (not a DVC stage: timings differ between runs): time prediction and training."""

from __future__ import annotations

from pathlib import Path

import typer

from stages._common import friendly_errors

app = typer.Typer(add_completion=False)


@app.command()
@friendly_errors(ValueError, FileNotFoundError)
def main(
    model: Path = typer.Option(..., help="Model file exported by the final stage."),
    images: Path = typer.Option(Path("data/sample/images"), help="Folder of images to time on."),
    n_images: int = typer.Option(16, min=1, help="How many of its images (sorted by name)."),
    threads: int = typer.Option(2, min=1, help="CPU threads for torch."),
    batch_sizes: str = typer.Option("1,4,8,16", help="Batch sizes for the throughput figure."),
    cuda: bool = typer.Option(True, help="Also time on CUDA when present."),
    out: Path = typer.Option(Path("metrics/bench.json"), help="Output JSON."),
) -> None:
    """Time predict on the CPU (N threads) and, when present, the GPU; write the figures."""
    from fetalbio.inference.bench import run_bench
    from fetalbio.inference.model_file import load_model
    from fetalbio.inference.predictor import collect_images
    from fetalbio.reporting import write_json

    try:
        sizes = [int(b) for b in batch_sizes.split(",") if b.strip()]
    except ValueError:
        raise ValueError(f"--batch-sizes must be comma-separated integers, got {batch_sizes!r}") from None
    if not sizes or min(sizes) < 1:
        raise ValueError(f"--batch-sizes must be positive, got {batch_sizes!r}")
    paths, _ = collect_images([images])
    result = run_bench(load_model(model), paths[:n_images], threads, sizes, cuda)
    write_json(out, result)
    c = result["cpu"]
    typer.echo(f"bench {result['model']}: CPU x{threads}: {c['model_ms_per_image_batch1']:.1f} ms/image (forward {c['forward_ms_batch1']:.1f} + "
               f"post {c['postprocess_ms_batch1']:.1f}), best {c['best_images_per_s']:.1f} img/s at batch {c['best_batch']}; "
               f"train {c['train_images_per_s_batch8']:.1f} img/s" + (f"; GPU {result['cuda']['model_ms_per_image_batch1']:.1f} ms/image" if result["cuda"] else "") + f" -> {out}")
