"""Streaming inference: object ids, objects appearing later, aggregation, geometry, flat memory."""

from __future__ import annotations

import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from emvos.errors import EmvosInputError
from emvos.inference.adapt import AdaptSettings
from emvos.inference.aggregate import aggregate
from emvos.inference.geometry import Geometry
from emvos.inference.graph import StaticGraph
from emvos.inference.predictor import FramePrediction, VideoPredictor, VideoState, adapt_settings, load_network
from emvos.inference.settings import SHIPPED_MODELS, checkpoint_file
from emvos.model.checkpoint import save_checkpoint
from emvos.model.config import Bijective, ModelConfig
from emvos.model.matching import downsample_mask
from emvos.model.network import EMVOS, FrameEmbedding, Reference

H, W = 48, 80


@pytest.fixture(scope="module")
def predictor() -> VideoPredictor:
    torch.manual_seed(0)
    model = EMVOS(ModelConfig(encoder="tiny-test"),
                  encoder_weights=None)
    return VideoPredictor(model, device="cpu", resolution=0)


def _frames(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in range(n)]


def _mask(boxes: dict[int, tuple[int, int, int, int]]) -> np.ndarray:
    m = np.zeros((H, W), np.uint8)
    for oid, (y0, y1, x0, x1) in boxes.items():
        m[y0:y1, x0:x1] = oid
    return m


def test_user_ids_are_kept_and_the_given_frame_is_returned_as_given(predictor: VideoPredictor) -> None:
    state = predictor.init_state()
    first = _mask({3: (5, 20, 5, 30), 7: (25, 45, 40, 70), 200: (0, 4, 0, 4)})
    out = predictor.step(state, _frames(1)[0], first)
    assert np.array_equal(out.labels, first)
    assert out.object_ids == (3, 7, 200)
    for image in _frames(3, seed=1):
        out = predictor.step(state, image)
        assert out.labels.shape == (H, W) and out.labels.dtype == np.uint8
        assert set(np.unique(out.labels)) <= {0, 3, 7, 200}


def test_frames_before_the_first_mask_are_background(predictor: VideoPredictor) -> None:
    state = predictor.init_state(_frames(4))
    predictor.add_mask(state, 2, _mask({1: (10, 30, 10, 30)}))
    outs = list(predictor.propagate(state))
    assert [o.index for o in outs] == [0, 1, 2, 3]
    assert not outs[0].labels.any() and not outs[1].labels.any() and outs[0].object_ids == ()
    assert outs[2].object_ids == outs[3].object_ids == (1,)


def test_objects_can_appear_mid_video_and_be_given_again(predictor: VideoPredictor) -> None:
    frames = _frames(6, seed=2)
    state = predictor.init_state(frames)
    predictor.add_mask(state, 0, _mask({1: (5, 20, 5, 30), 2: (25, 45, 40, 70)}))
    later = _mask({5: (30, 40, 5, 15)})
    predictor.add_mask(state, 3, later)
    outs = list(predictor.propagate(state))
    assert outs[2].object_ids == (1, 2) and outs[3].object_ids == (1, 2, 5)
    assert np.array_equal(outs[3].labels[later == 5], np.full((later == 5).sum(), 5))
    assert [g.object_ids for g in state.groups] == [[1, 2], [5]]
    # Giving object 1 again makes that frame its new reference.
    again = _mask({1: (0, 10, 0, 10)})
    predictor.step(state, frames[0], again)
    assert [g.object_ids for g in state.groups] == [[2], [5], [1]]
    assert state.object_ids == [1, 2, 5]


def test_propagate_equals_stepping(predictor: VideoPredictor) -> None:
    frames = _frames(4, seed=3)
    first = _mask({4: (5, 25, 5, 35)})
    state = predictor.init_state(frames)
    predictor.add_mask(state, 0, first)
    streamed = [p.labels for p in predictor.propagate(state)]
    manual_state = predictor.init_state()
    manual = [predictor.step(manual_state, f, first if i == 0 else None).labels for i, f in enumerate(frames)]
    assert all(np.array_equal(a, b) for a, b in zip(streamed, manual, strict=True))


def _state_bytes(state: VideoState) -> int:
    tensors = [*state.prev.keys.values(), state.prev.mask]
    for g in state.groups:
        tensors += [*g.ref.keys.values(), g.ref.mask]
    return sum(t.numel() * t.element_size() for t in tensors)


def test_memory_does_not_grow_with_video_length(predictor: VideoPredictor) -> None:
    rng = np.random.default_rng(4)
    state = predictor.init_state()
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    predictor.step(state, image, _mask({1: (5, 20, 5, 30), 2: (25, 45, 40, 70)}))
    sizes = []
    for i in range(60):
        predictor.step(state, image)
        if i in (5, 59):
            sizes.append(_state_bytes(state))
    assert sizes[0] == sizes[1]
    assert state.next_index == 61


def test_resized_videos_come_back_at_input_size() -> None:
    torch.manual_seed(0)
    model = EMVOS(ModelConfig(encoder="tiny-test"),
                  encoder_weights=None)
    pred = VideoPredictor(model, device="cpu", resolution=32)
    state = pred.init_state()
    frames = _frames(2, seed=5)
    pred.step(state, frames[0], _mask({1: (5, 40, 5, 60)}))
    assert state.geometry.work == (32, 53)
    assert pred.step(state, frames[1]).labels.shape == (H, W)


def test_bijective_matching_needs_the_surjective_branch() -> None:
    model = EMVOS(ModelConfig(encoder="tiny-test", branches=("em",)), encoder_weights=None)
    with pytest.raises(EmvosInputError, match="surjective"):
        VideoPredictor(model, device="cpu", bijective=Bijective.with_defaults("topk"))


@pytest.mark.parametrize("kind", ["kernel", "topk"])
def test_bijective_matching_runs(predictor: VideoPredictor, kind: str) -> None:
    pred = VideoPredictor(predictor.model, device="cpu", resolution=0, bijective=Bijective.with_defaults(kind))
    state = pred.init_state()
    frames = _frames(2, seed=6)
    pred.step(state, frames[0], _mask({1: (5, 40, 5, 60)}))
    assert pred.step(state, frames[1]).labels.shape == (H, W)


def test_aggregation_is_a_distribution_that_respects_confident_objects() -> None:
    fg = torch.rand(3, 10, 12)
    probs = torch.stack([1 - fg, fg], dim=1)
    agg = aggregate(probs)
    assert agg.shape == (4, 10, 12)
    assert torch.allclose(agg.sum(0), torch.ones(10, 12), atol=1e-5)
    # An object that is certain wins its pixels; no object wins where all say background.
    fg[1, 0, 0], fg[:, 1, 1] = 1.0, 0.0
    agg = aggregate(torch.stack([1 - fg, fg], dim=1))
    assert agg[:, 0, 0].argmax() == 2 and agg[:, 1, 1].argmax() == 0
    # Aggregation keeps each object's ordering of pixels.
    single = aggregate(torch.stack([1 - fg[:1], fg[:1]], dim=1))[1]
    order = fg[0].flatten().argsort()
    assert torch.all(single.flatten()[order].diff() >= -1e-6)


def test_geometry_pads_centred_and_restores() -> None:
    geo = Geometry.for_frames((50, 70), resolution=0, stride=16)
    assert geo.padded == (64, 80)
    assert geo.pad == (5, 5, 7, 7)
    geo = Geometry.for_frames((49, 69), resolution=0, stride=16)
    assert geo.pad == (6, 5, 8, 7)  # the extra pixel goes left / top
    x = torch.rand(1, 2, 49, 69)
    assert torch.equal(geo.restore(geo.mask(x)), x)
    geo = Geometry.for_frames((240, 432), resolution=480, stride=16)
    assert geo.work == (480, 864) and geo.resized
    assert Geometry.for_frames((720, 1280), resolution=480, stride=16).work == (480, 853)


@pytest.mark.parametrize("widths", [(8, 8, 8), (8, 8, 128)])
def test_inference_optimisations_keep_the_masks(widths: tuple[int, int, int]) -> None:
    """Folded BatchNorm, activations computed with their convolutions and channels-last give the
    unoptimised path's masks (up to float rounding)."""
    torch.manual_seed(0)
    model = EMVOS(ModelConfig(encoder="efficientnet_lite0", key_channels=16, decoder_widths=widths))
    with torch.no_grad():  # decisive logits, as a trained decoder gives; near-ties would flip on rounding
        for p in model.decoder.parameters():
            p.mul_(3)
    frames = _frames(4, seed=7)
    first = _mask({1: (5, 30, 5, 40), 2: (20, 45, 45, 75)})
    outputs = {}
    for optimize in (False, True):
        pred = VideoPredictor(model, device="cpu", resolution=0, optimize=optimize)
        state = pred.init_state()
        outputs[optimize] = np.stack([pred.step(state, f, first if i == 0 else None).labels
                                      for i, f in enumerate(frames)])
    assert (outputs[False] == outputs[True]).mean() > 0.999
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in pred.model.modules())  # the copy is folded
    assert sum(1 for m in model.encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)) > 0  # not folded in place


def test_bf16_autocast_runs_on_cpu(predictor: VideoPredictor) -> None:
    pred = VideoPredictor(predictor.model, device="cpu", resolution=0, precision="bf16")
    state = pred.init_state()
    frames = _frames(2, seed=8)
    pred.step(state, frames[0], _mask({1: (5, 40, 5, 60)}))
    assert pred.step(state, frames[1]).labels.shape == (H, W)
    with pytest.raises(EmvosInputError, match="fp16"):
        VideoPredictor(predictor.model, device="cpu", precision="fp16")


def test_the_graphed_frame_path_gives_the_eager_masks() -> None:
    """The data flow of ``cuda_graphs`` (inputs copied into the graph's buffers, the previous frame
    read back from its outputs, a new capture when objects are given mid-video), run on the CPU,
    where :class:`StaticGraph` calls the function instead of replaying a capture."""
    torch.manual_seed(0)
    model = EMVOS(ModelConfig(encoder="tiny-test"), encoder_weights=None)
    eager = VideoPredictor(model, device="cpu", resolution=0)
    graphed = VideoPredictor(model, device="cpu", resolution=0)
    graphed.cuda_graphs = True  # the constructor refuses it off CUDA
    frames = _frames(7, seed=9)
    masks = {0: _mask({2: (5, 20, 5, 30), 9: (25, 45, 40, 70)}), 4: _mask({5: (30, 44, 2, 20)})}
    states = {p: p.init_state() for p in (eager, graphed)}
    graphs = []
    for i, frame in enumerate(frames):
        out = {p: p.step(s, frame, masks.get(i)).labels for p, s in states.items()}
        assert np.array_equal(out[eager], out[graphed]), f"frame {i}"
        graphs.append(states[graphed].graph)
    assert graphs[0] is None and graphs[4] is None  # given frames run eagerly and drop the graph
    assert graphs[1] is graphs[3] is not None and graphs[5] is graphs[6] is not graphs[3]
    assert not graphs[1].captured


@pytest.mark.parametrize("graphed", [False, True], ids=["eager", "graph-data-flow"])
def test_lookahead_encodes_frames_together_with_the_same_masks(graphed: bool) -> None:
    """Frames read ahead and encoded as one batch, with objects given mid-chunk, frames before the
    first object in a chunk, and a last chunk shorter than the others."""
    torch.manual_seed(0)
    model = EMVOS(ModelConfig(encoder="tiny-test"), encoder_weights=None)
    with torch.no_grad():  # decisive logits: near-ties would flip on the batch's different rounding
        for p in model.decoder.parameters():
            p.mul_(3)
    frames = _frames(9, seed=10)
    masks = {2: _mask({2: (5, 20, 5, 30)}), 4: _mask({6: (25, 45, 40, 70)})}
    outputs = {}
    for lookahead in (1, 3):
        pred = VideoPredictor(model, device="cpu", resolution=0, lookahead=lookahead)
        pred.cuda_graphs = graphed
        state = pred.init_state(frames)
        for index, mask in masks.items():
            pred.add_mask(state, index, mask)
        outputs[lookahead] = list(pred.propagate(state))
        if graphed:
            assert sorted(state.embed_graphs) == sorted({1, 3} if lookahead == 3 else {1})
    assert [p.index for p in outputs[3]] == list(range(9))
    assert [p.object_ids for p in outputs[3]] == [p.object_ids for p in outputs[1]]
    assert outputs[3][1].object_ids == () and outputs[3][4].object_ids == (2, 6)
    for a, b in zip(outputs[1], outputs[3], strict=True):
        assert np.array_equal(a.labels, b.labels), a.index


def test_graphed_chunks_are_padded_and_graphs_do_not_keep_their_video_alive() -> None:
    """A last, shorter chunk reuses the full chunk's encoder graph (padded with its last frame), and
    a video's state is freed as soon as it is dropped (no reference cycle through its graphs)."""
    torch.manual_seed(0)
    model = EMVOS(ModelConfig(encoder="tiny-test"), encoder_weights=None)
    with torch.no_grad():
        for p in model.decoder.parameters():
            p.mul_(3)
    frames = _frames(7, seed=11)
    first = _mask({3: (5, 25, 5, 35)})
    eager = VideoPredictor(model, device="cpu", resolution=0)
    expected = [eager.step_many(eager.init_state(), frames, [first] + [None] * 6)]
    graphed = VideoPredictor(model, device="cpu", resolution=0, lookahead=4)
    graphed.cuda_graphs = True
    state = graphed.init_state(frames)
    graphed.add_mask(state, 0, first)
    got = list(graphed.propagate(state))
    assert list(state.embed_graphs) == [4] and state.graph is not None
    assert all(np.array_equal(a.labels, b.labels) for a, b in zip(expected[0], got, strict=True))
    video = weakref.ref(state)
    del state
    assert video() is None


def test_step_many_checks_its_inputs(predictor: VideoPredictor) -> None:
    state = predictor.init_state()
    with pytest.raises(ValueError, match="2 frames but 1 masks"):
        predictor.step_many(state, _frames(2), [None])
    frames = [*_frames(1), np.zeros((H + 2, W, 3), np.uint8)]
    with pytest.raises(ValueError, match=r"frame 1: frame \(50, 80\)"):
        predictor.step_many(state, frames, [_mask({1: (0, 9, 0, 9)}), None])
    assert state.next_index == 0 and not state.object_ids  # nothing was half-done
    with pytest.raises(EmvosInputError, match="at least 1 frame"):
        VideoPredictor(predictor.model, device="cpu", lookahead=0)


def test_cuda_graphs_need_cuda(predictor: VideoPredictor) -> None:
    with pytest.raises(EmvosInputError, match="CUDA device"):
        VideoPredictor(predictor.model, device="cpu", cuda_graphs=True)


def test_a_static_graph_checks_its_inputs() -> None:
    graph = StaticGraph(lambda xs: [xs[0] * 2], [torch.ones(2, 3)], torch.device("cpu"))
    assert torch.equal(graph([torch.full((2, 3), 4.0)])[0], torch.full((2, 3), 8.0))
    with pytest.raises(ValueError, match=r"captured as torch.float32 \(2, 3\), got torch.float32 \(3, 2\)"):
        graph([torch.ones(3, 2)])
    with pytest.raises(ValueError, match="takes 1 inputs"):
        graph([torch.ones(2, 3), torch.ones(2, 3)])


def test_compiling_allows_a_shape_per_resolution_and_object_count(predictor: VideoPredictor,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch._dynamo.config, "recompile_limit", 8)
    VideoPredictor(predictor.model, device="cpu", compile=True)  # compiles lazily, at the first frame
    assert torch._dynamo.config.recompile_limit >= 64


def _reference_labels(model: EMVOS, frames: list[np.ndarray], first: np.ndarray) -> list[np.ndarray]:
    """Labels of frames 1.. by the network's definition, in the network's dtype: each frame matched
    against frame 0 and the previous frame, decoded, softmaxed, aggregated and argmaxed."""
    dtype = next(model.parameters()).dtype
    ids = [int(i) for i in np.unique(first) if i != 0]
    lut = torch.tensor([0, *ids])

    def embed(frame: np.ndarray) -> FrameEmbedding:
        return model.embed(torch.from_numpy(frame).permute(2, 0, 1)[None].to(dtype) / 255)

    def reference(query: FrameEmbedding, probs: Tensor) -> Reference:  # probs: (O, 2, H, W)
        return Reference(query.keys, downsample_mask(probs, model.stride).flatten(2)[None])

    given = torch.from_numpy(first)
    fg = torch.stack([(given == i).to(dtype) for i in ids])
    query = embed(frames[0])
    first_ref = prev = reference(query, torch.stack([1 - fg, fg], dim=1))
    labels = []
    with torch.no_grad():
        for frame in frames[1:]:
            query = embed(frame)
            logits = model.decode(query, model.match(query, first_ref, "first"), model.match(query, prev, "prev"),
                                  prev.mask)
            agg = aggregate(F.softmax(logits[0], dim=1))
            labels.append(lut[agg.argmax(dim=0)].numpy().astype(np.uint8))
            prev = reference(query, torch.stack([1 - agg[1:], agg[1:]], dim=1))
    return labels


def test_float64_networks_predict_in_float64_on_nearly_tied_objects() -> None:
    """A float64 network's masks are its float64 definition's, pixel for pixel. Random weights make
    the objects' probabilities nearly tie (the decoder's features swamp its object inputs), so any
    rounding to float32 on the way moves pixels from one object to another."""
    torch.manual_seed(0)
    model = EMVOS(ModelConfig(encoder="tiny-test"), encoder_weights=None).double().eval()
    frames = _frames(5, seed=11)
    first = _mask({1: (0, 24, 0, 40), 2: (0, 24, 40, 80), 3: (24, 48, 0, 40), 4: (24, 48, 40, 80)})
    pred = VideoPredictor(model, device="cpu", resolution=0, optimize=False)
    state = pred.init_state(frames)
    pred.add_mask(state, 0, first)
    ours = [p.labels for p in pred.propagate(state)][1:]
    expected = _reference_labels(model, frames, first)
    assert all(len(np.unique(labels)) > 2 for labels in expected)  # several objects win pixels
    for got, want in zip(ours, expected, strict=True):
        np.testing.assert_array_equal(got, want)


def test_propagate_goes_backward_or_over_chosen_frames_with_masks_by_index(predictor: VideoPredictor) -> None:
    frames = _frames(5, seed=12)
    last, middle = _mask({2: (5, 25, 5, 35)}), _mask({6: (30, 45, 50, 75)})
    backward = list(predictor.propagate(predictor.init_state(), frames, {4: last, 1: middle}, direction="backward"))
    stepped_state = predictor.init_state()
    stepped = [predictor.step(stepped_state, frames[i], {4: last, 1: middle}.get(i)) for i in (4, 3, 2, 1, 0)]
    assert [p.index for p in backward] == [4, 3, 2, 1, 0]
    assert all(np.array_equal(a.labels, b.labels) for a, b in zip(backward, stepped, strict=True))
    assert backward[-1].object_ids == (2, 6)
    chosen = list(predictor.propagate(predictor.init_state(), frames, {4: last}, indices=[4, 0, 1]))
    assert [p.index for p in chosen] == [4, 0, 1]
    assert np.array_equal(chosen[1].labels, stepped[1].labels)  # frame 0 second, as frame 3 was
    with pytest.raises(ValueError, match="direction"):
        list(predictor.propagate(predictor.init_state(), frames, direction="sideways"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sequence"):
        list(predictor.propagate(predictor.init_state(), iter(frames), direction="backward"))
    with pytest.raises(ValueError, match="frames"):
        list(predictor.propagate(predictor.init_state()))


def test_propagate_reports_each_frame_and_stops_when_the_callback_raises(predictor: VideoPredictor) -> None:
    frames = _frames(5, seed=13)
    seen: list[tuple[int, float]] = []

    def on_frame(prediction: FramePrediction, seconds: float) -> None:
        seen.append((prediction.index, seconds))
        if prediction.index == 3:
            raise KeyboardInterrupt

    yielded = []
    with pytest.raises(KeyboardInterrupt):
        for prediction in predictor.propagate(predictor.init_state(), frames, {1: _mask({1: (5, 20, 5, 30)})},
                                              on_frame=on_frame):
            yielded.append(prediction.index)
    assert [index for index, _ in seen] == [0, 1, 2, 3] and yielded == [0, 1, 2]
    assert seen[0][1] == 0.0 and all(seconds > 0 for _, seconds in seen[1:])  # no work before the first object


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"resolution": -1}, "^resolution must be 0"),
    ({"precision": "fp8"}, "^precision must be one of"),
    ({"lookahead": 0}, "^lookahead must be at least 1 frame"),
    ({"cuda_graphs": True}, "^cuda_graphs needs a CUDA device"),
])
def test_the_library_names_its_parameters_not_flags(predictor: VideoPredictor, kwargs: dict[str, object],
                                                   message: str) -> None:
    with pytest.raises(ValueError, match=message):
        VideoPredictor(predictor.model, device="cpu", **kwargs)  # type: ignore[arg-type]


def test_reverse_propagation_is_forward_over_the_reversed_frames(predictor: VideoPredictor) -> None:
    frames = _frames(5, seed=5)
    mask = _mask({2: (5, 25, 5, 35)})
    state = predictor.init_state(frames)
    predictor.add_mask(state, 3, mask)
    backward = list(predictor.propagate(state, direction="backward"))
    assert [p.index for p in backward] == [4, 3, 2, 1, 0]
    assert not backward[0].labels.any()  # after the mask, in video order: nothing to follow yet
    forward_state = predictor.init_state(frames[::-1])
    predictor.add_mask(forward_state, 1, mask)
    forward = list(predictor.propagate(forward_state))
    for b, f in zip(backward, forward, strict=True):
        np.testing.assert_array_equal(b.labels, f.labels)


def test_predictions_carry_probabilities_when_asked(predictor: VideoPredictor) -> None:
    frames = _frames(3, seed=6)
    state = predictor.init_state(frames, probabilities=True)
    predictor.add_mask(state, 0, _mask({4: (5, 25, 5, 35), 9: (30, 40, 50, 70)}))
    for prediction in predictor.propagate(state):
        probabilities = prediction.probabilities
        assert probabilities.shape == (2, H, W) and probabilities.dtype == np.uint8
        for slot, object_id in enumerate((4, 9)):  # each pixel's object is its most probable (up to rounding)
            pixels = prediction.labels == object_id
            assert (probabilities[slot][pixels].astype(int) >= probabilities.max(axis=0)[pixels] - 1).all()
    assert list(predictor.propagate(predictor.init_state(frames)))[0].probabilities is None


# -- checkpoints by name, and the adaptation a model file recommends ----------------------------------------


def test_checkpoints_are_files_or_shipped_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert checkpoint_file(None) == SHIPPED_MODELS["emvos-lite"]
    assert checkpoint_file("emvos-base") == SHIPPED_MODELS["emvos-base"]
    assert checkpoint_file(tmp_path / "mine.pt") == tmp_path / "mine.pt"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "emvos-base").write_bytes(b"")  # a file of that name in the working folder wins
    assert checkpoint_file("emvos-base") == Path("emvos-base")
    with pytest.raises(EmvosInputError, match="emvos-lite, emvos-base"):
        load_network("emvos-bsae")


def test_a_model_file_recommends_its_adaptation(tmp_path: Path) -> None:
    """The file's ``adapt`` entry changes the defaults; steps come from the caller; unknown names are refused."""
    network = EMVOS(ModelConfig(encoder="tiny-test"), encoder_weights=None)
    save_checkpoint(tmp_path / "tuned.pt", network, adapt={"lr": 2e-4, "scale": [0.9, 1.1]})
    save_checkpoint(tmp_path / "plain.pt", network)
    save_checkpoint(tmp_path / "future.pt", network, adapt={"warmup": 3})
    tuned = adapt_settings(tmp_path / "tuned.pt")
    assert tuned == AdaptSettings(lr=2e-4, scale=(0.9, 1.1))
    assert adapt_settings(tmp_path / "tuned.pt", steps=5) == AdaptSettings(steps=5, lr=2e-4, scale=(0.9, 1.1))
    assert adapt_settings(tmp_path / "tuned.pt", steps=0) is None
    assert adapt_settings(tmp_path / "plain.pt") == AdaptSettings()
    assert VideoPredictor.from_checkpoint(tmp_path / "tuned.pt", device="cpu").adapt == tuned
    assert VideoPredictor.from_checkpoint(tmp_path / "tuned.pt", device="cpu", adapt=None).adapt is None
    with pytest.raises(EmvosInputError, match="future.pt: its adaptation settings name warmup"):
        adapt_settings(tmp_path / "future.pt")


def test_adaptation_overrides_go_over_the_files_settings(tmp_path: Path) -> None:
    """An ablation's fields go over the file's; explicit steps over both; unknown names are refused."""
    network = EMVOS(ModelConfig(encoder="tiny-test"), encoder_weights=None)
    save_checkpoint(tmp_path / "tuned.pt", network, adapt={"lr": 2e-4, "absent_p": 0.5})
    assert adapt_settings(tmp_path / "tuned.pt", overrides={"absent_p": 0, "scale": [0.9, 1.1]}) == AdaptSettings(
        lr=2e-4, absent_p=0.0, scale=(0.9, 1.1))
    assert adapt_settings(tmp_path / "tuned.pt", 7, {"steps": 3, "lr": 1e-3}) == AdaptSettings(
        steps=7, lr=1e-3, absent_p=0.5)
    assert adapt_settings(tmp_path / "tuned.pt", overrides={"steps": 0}) is None
    with pytest.raises(ValueError, match="warmup"):
        adapt_settings(tmp_path / "tuned.pt", overrides={"warmup": 3})
