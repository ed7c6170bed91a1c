"""Peak memory of one pass over a release's training images: held, as the trainer's images were
before they streamed, or streamed as `tools.train_sam` reads them now.

    python -m benchmarks.training_memory --release out/scenes/mem --image-size 1024 --images 250 1000

"held" keeps every image of the pass (decoded and resized to the model's input side, as
`tools.train_sam` collected them before it trained); "streamed" iterates the same pass through
`tools.release_samples.ReleaseSamples` with its default shuffle buffer, dropping each image once
it is handed over. Each (mode, images) runs in a fresh child process; the figure is that process's
peak resident set size (ru_maxrss), so the interpreter and its imports count in every run.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import time

SHUFFLE_BUFFER = 256
"""`tools.train_sam`'s default --shuffle-buffer."""


def _run(release: str, image_size: int, images: int, mode: str, queue: mp.Queue) -> None:
    from tools.release_samples import ReleaseSamples

    started = time.perf_counter()
    if mode == "held":
        held = list(ReleaseSamples(release, image_size, limit=images))
        count = len(held)
    else:
        count = sum(1 for _ in ReleaseSamples(release, image_size, limit=images, shuffle_buffer=SHUFFLE_BUFFER))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
    queue.put((count, peak, time.perf_counter() - started))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--release", required=True, help="a release with masks, e.g. from synthetic.scene_release")
    parser.add_argument("--image-size", type=int, default=1024, help="the model's input side in px (default 1024)")
    parser.add_argument("--images", type=int, nargs="+", default=[250, 1000], help="images per pass (first N)")
    args = parser.parse_args()
    context = mp.get_context("spawn")
    print(f"one pass over {args.release} at {args.image_size} px; peak RSS of a fresh process in MiB")
    for images in args.images:
        for mode in ("held", "streamed"):
            queue = context.Queue()
            child = context.Process(target=_run, args=(args.release, args.image_size, images, mode, queue))
            child.start()
            count, peak, seconds = queue.get()
            child.join()
            print(f"{mode:<9} {count:6d} images  peak {peak:8.0f} MiB  {seconds:6.1f} s")


if __name__ == "__main__":
    main()
