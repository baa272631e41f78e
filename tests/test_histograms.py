"""train.histograms: weight, gradient and activation summaries in the TensorBoard event files."""

import glob
import re

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.util.tensor_util import make_ndarray

from conftest import run_job


def test_histograms_reach_the_event_files(tmp_path, blob_npz):
    run_job(tmp_path, "name=h", "data.format=npz", f"data.train={blob_npz}", "model.name=tiny_cnn",
            "train.epochs=2", "train.histograms=true", "output.report=false")
    files = glob.glob(str(tmp_path / "h" / "tensorboard" / "histograms" / "events.out.tfevents.*"))
    assert len(files) == 1
    events = EventAccumulator(files[0], size_guidance={"tensors": 0}).Reload()
    tags = events.Tags()["tensors"]
    kinds = {tag.split("/")[0] for tag in tags}
    assert kinds == {"weights", "gradients", "activations"}
    found = {}
    # layer names carry a process-wide counter (conv2d_3) when several models were built
    for key, pattern in (("conv kernel", r"weights/conv2d(_\d+)?/kernel"),
                         ("dense gradient", r"gradients/dense(_\d+)?/kernel"),
                         ("dense kernel", r"weights/dense(_\d+)?/kernel"),
                         ("conv output", r"activations/tiny_cnn(_\d+)?/conv2d(_\d+)?"),
                         ("conv zeros", r"activations/tiny_cnn(_\d+)?/conv2d(_\d+)?/zero_fraction"),
                         ("softmax mean", r"activations/probabilities/mean")):
        matches = [t for t in tags if re.fullmatch(pattern, t)]
        assert len(matches) == 1, (pattern, sorted(tags))
        found[key] = matches[0]
        assert [e.step for e in events.Tensors(matches[0])] == [1, 2]  # every epoch
    # a histogram holds real buckets; the weights moved between epochs; ReLU zeros are counted
    first, second = (make_ndarray(e.tensor_proto) for e in events.Tensors(found["dense kernel"]))
    assert first.ndim == 2 and first.shape[1] == 3 and first.shape[0] > 1  # (bucket, [left, right, count])
    assert first[:, 2].sum() == second[:, 2].sum() > 0 and not (first == second).all()
    zeros = [float(make_ndarray(e.tensor_proto)) for e in events.Tensors(found["conv zeros"])]
    assert all(0.0 < z < 1.0 for z in zeros)
    # the default run writes none of this
    run_job(tmp_path, "name=plain", "data.format=npz", f"data.train={blob_npz}",
            "model.name=tiny_cnn", "train.epochs=1", "output.report=false")
    assert not glob.glob(str(tmp_path / "plain" / "tensorboard" / "histograms"))
