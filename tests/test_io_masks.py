"""Reading masks: accepted and rejected formats, the DAVIS palette, and assigning masks to frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from emvos.errors import EmvosInputError, EmvosInputWarning
from emvos.io import DAVIS_PALETTE, check_mask_size, collect_masks, full_palette, open_frames, read_mask
from emvos.io.masks import read_label_png, write_label_png

NAMES = [f"{index:05d}" for index in range(10)]


def _labels(ids: tuple[int, ...] = (1,), height: int = 12, width: int = 16) -> np.ndarray:
    """``(H, W) uint8`` labels with one vertical band per id and background on the left."""
    labels = np.zeros((height, width), dtype=np.uint8)
    for position, object_id in enumerate(ids):
        labels[:, 2 + 3 * position : 5 + 3 * position] = object_id
    return labels


def _save_palette_mask(path: Path, labels: np.ndarray, palette: list[int] = DAVIS_PALETTE) -> Path:
    image = Image.fromarray(labels, mode="L")
    image.putpalette(palette)
    image.save(path)
    return path


def test_davis_palette_is_the_voc_colour_map() -> None:
    assert len(DAVIS_PALETTE) == 768
    colours = [tuple(DAVIS_PALETTE[3 * index : 3 * index + 3]) for index in range(256)]
    assert colours[:9] == [
        (0, 0, 0),
        (128, 0, 0),
        (0, 128, 0),
        (128, 128, 0),
        (0, 0, 128),
        (128, 0, 128),
        (0, 128, 128),
        (128, 128, 128),
        (64, 0, 0),
    ]
    assert colours[9] == (192, 0, 0) and colours[255] == (224, 224, 192)
    assert len(set(colours)) == 256


def test_full_palette_fills_missing_entries_from_davis() -> None:
    assert full_palette(None) == DAVIS_PALETTE
    assert full_palette([1, 2, 3]) == [1, 2, 3] + DAVIS_PALETTE[3:]


def test_palette_mask_keeps_ids_with_gaps_and_the_palette(tmp_path: Path) -> None:
    labels = _labels((3, 200))
    palette = [(7 * value) % 256 for value in range(768)]
    mask = read_mask(_save_palette_mask(tmp_path / "m.png", labels, palette))

    assert mask.mode == "P"
    assert mask.palette == palette
    assert mask.labels.dtype == np.uint8
    np.testing.assert_array_equal(mask.labels, labels)
    assert mask.object_ids == [3, 200]
    assert mask.size == (12, 16)


def test_greyscale_mask_is_one_object_with_id_255(tmp_path: Path) -> None:
    labels = _labels((255,))
    Image.fromarray(labels, mode="L").save(tmp_path / "m.png")

    mask = read_mask(tmp_path / "m.png")

    assert (mask.mode, mask.palette, mask.object_ids) == ("L", None, [255])
    np.testing.assert_array_equal(mask.labels, labels)


def test_one_bit_mask_reads_as_greyscale(tmp_path: Path) -> None:
    Image.fromarray(_labels((255,)), mode="L").convert("1").save(tmp_path / "m.png")

    mask = read_mask(tmp_path / "m.png")

    assert (mask.mode, mask.object_ids) == ("L", [255])


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_colour_masks_give_one_object_per_colour_and_say_which(tmp_path: Path, mode: str) -> None:
    rgb = np.zeros((12, 16, 3), np.uint8)
    rgb[:, 2:5] = (255, 0, 0)
    rgb[:, 8:11] = (0, 200, 0)
    pixels = rgb if mode == "RGB" else np.dstack([rgb, np.full((12, 16), 255, np.uint8)])
    if mode == "RGBA":
        pixels[:, 14:, :] = (9, 9, 9, 0)  # transparent: background whatever its colour
    Image.fromarray(pixels, mode=mode).save(tmp_path / "colour.png")
    with pytest.warns(EmvosInputWarning, match=r"colour\.png.*2 object.*#00c800 -> 1, #ff0000 -> 2"):
        mask = read_mask(tmp_path / "colour.png")
    assert mask.mode == "P" and mask.object_ids == [1, 2]
    assert (mask.labels[:, 2:5] == 2).all() and (mask.labels[:, 8:11] == 1).all() and not mask.labels[:, 14:].any()
    assert mask.palette[3:9] == [0, 200, 0, 255, 0, 0]  # outputs keep the user's colours


def test_anti_aliased_greyscale_mask_is_thresholded_with_a_warning(tmp_path: Path) -> None:
    labels = np.zeros((40, 40), np.uint8)
    labels[10:30, 10:30] = 255
    blurred = Image.fromarray(labels).filter(ImageFilter.GaussianBlur(1))
    blurred.save(tmp_path / "soft.png")
    assert len(np.unique(np.array(blurred))) > 20
    with pytest.warns(EmvosInputWarning, match=r"soft\.png.*grey levels"):
        mask = read_mask(tmp_path / "soft.png")
    assert mask.object_ids == [255]
    assert abs(int((mask.labels > 0).sum()) - 400) <= 40


def test_a_greyscale_mask_of_several_ids_is_not_thresholded(tmp_path: Path) -> None:
    labels = np.kron(np.array([[0, 1], [2, 3]], np.uint8), np.ones((12, 12), np.uint8))
    labels[:4, :4] = 4
    Image.fromarray(labels, mode="L").save(tmp_path / "ids.png")
    assert read_mask(tmp_path / "ids.png").object_ids == [1, 2, 3, 4]


def test_implausibly_many_objects_stop_unless_allowed(tmp_path: Path) -> None:
    labels = np.arange(12 * 16, dtype=np.uint8).reshape(12, 16)
    _save_palette_mask(tmp_path / "many.png", labels)
    with pytest.raises(EmvosInputError, match=r"many\.png.*191 different object ids.*--many-objects"):
        read_mask(tmp_path / "many.png")
    assert len(read_mask(tmp_path / "many.png", max_objects=None).object_ids) == 191


def test_a_mask_slightly_off_the_frame_size_is_resized_with_a_warning(tmp_path: Path) -> None:
    path = _save_palette_mask(tmp_path / "00000.png", _labels(height=24, width=32))
    with pytest.warns(EmvosInputWarning, match=r"32x24 but the frames are 16x12; resized"):
        masks = collect_masks([path], NAMES, frame_size=(12, 16))
    assert masks[0][1].size == (12, 16) and masks[0][1].object_ids == [1]
    with pytest.raises(EmvosInputError, match="resize the mask"):
        collect_masks([path], NAMES, frame_size=(12, 20))


def test_a_lone_mask_named_after_a_missing_frame_is_an_error(tmp_path: Path) -> None:
    path = _save_palette_mask(tmp_path / "00099.png", _labels())
    with pytest.raises(EmvosInputError, match=r"00099\.png: names frame 00099, but the video has 10 frames"):
        collect_masks([path], NAMES)


def test_16_bit_mask_is_rejected(tmp_path: Path) -> None:
    Image.fromarray(_labels((1,)).astype(np.uint16)).save(tmp_path / "deep.png")
    with pytest.raises(EmvosInputError, match=r"deep\.png.*16/32-bit"):
        read_mask(tmp_path / "deep.png")


def test_lossy_or_non_png_mask_is_rejected(tmp_path: Path) -> None:
    Image.fromarray(_labels((255,)), mode="L").save(tmp_path / "mask.jpg")
    Image.fromarray(_labels((1,)).astype(np.int32), mode="I").save(tmp_path / "mask.tif")
    for name in ("mask.jpg", "mask.tif"):
        with pytest.raises(EmvosInputError, match=rf"{name}.*lossless PNG"):
            read_mask(tmp_path / name)


def test_empty_mask_is_rejected(tmp_path: Path) -> None:
    _save_palette_mask(tmp_path / "empty.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(EmvosInputError, match=r"empty\.png.*no object"):
        read_mask(tmp_path / "empty.png")


def test_unreadable_and_missing_masks(tmp_path: Path) -> None:
    (tmp_path / "junk.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(EmvosInputError, match=r"junk\.png.*cannot read"):
        read_mask(tmp_path / "junk.png")
    with pytest.raises(EmvosInputError, match=r"gone\.png.*no such mask"):
        read_mask(tmp_path / "gone.png")


def test_check_mask_size(tmp_path: Path) -> None:
    mask = read_mask(_save_palette_mask(tmp_path / "m.png", _labels()))
    check_mask_size(mask, (12, 16), tmp_path / "m.png")
    with pytest.raises(EmvosInputError, match=r"m\.png.*16x12.*20x10.*resize"):
        check_mask_size(mask, (10, 20), tmp_path / "m.png")


def test_lone_mask_with_unknown_name_annotates_the_first_frame(tmp_path: Path) -> None:
    path = _save_palette_mask(tmp_path / "first.png", _labels())

    masks = collect_masks([path], NAMES)

    assert list(masks) == [0]
    assert masks[0][0] == path and masks[0][1].object_ids == [1]


def test_masks_go_to_the_frame_named_like_them(tmp_path: Path) -> None:
    late = _save_palette_mask(tmp_path / "00007.png", _labels((2,)))
    first = _save_palette_mask(tmp_path / "00000.png", _labels((1,)))

    assert {index: path for index, (path, _) in collect_masks([late], NAMES).items()} == {7: late}
    masks = collect_masks([late, first], NAMES)
    assert list(masks) == [0, 7]
    assert [mask.object_ids for _, mask in masks.values()] == [[1], [2]]


def test_folder_of_masks(tmp_path: Path) -> None:
    folder = tmp_path / "masks"
    folder.mkdir()
    for name in ("00000.png", "00003.png"):
        _save_palette_mask(folder / name, _labels())
    (folder / "notes.txt").write_text("ignored")

    assert list(collect_masks([folder], NAMES)) == [0, 3]


def test_one_of_several_masks_matching_no_frame_is_an_error(tmp_path: Path) -> None:
    paths = [_save_palette_mask(tmp_path / name, _labels()) for name in ("00000.png", "stray.png")]
    with pytest.raises(EmvosInputError, match=r"stray\.png.*matches no frame"):
        collect_masks(paths, NAMES)


def test_two_masks_for_one_frame_is_an_error(tmp_path: Path) -> None:
    paths = []
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        paths.append(_save_palette_mask(tmp_path / folder / "00002.png", _labels()))
    with pytest.raises(EmvosInputError, match=r"00002\.png.*already has"):
        collect_masks(paths, NAMES)


def test_mask_spec_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    mask = _save_palette_mask(tmp_path / "00000.png", _labels())
    with pytest.raises(EmvosInputError, match="empty.*no .png masks"):
        collect_masks([empty], NAMES)
    with pytest.raises(EmvosInputError, match="empty.*one folder of masks or mask files"):
        collect_masks([empty, mask], NAMES)
    with pytest.raises(EmvosInputError, match=r"missing\.png.*no such"):
        collect_masks([tmp_path / "missing.png"], NAMES)
    with pytest.raises(EmvosInputError, match=r"00000\.png.*16x12.*8x8"):
        collect_masks([mask], NAMES, frame_size=(8, 8))


def test_davis_2017_sample_first_mask(davis2017_sample_root: Path) -> None:
    frames = open_frames(davis2017_sample_root / "JPEGImages" / "480p" / "schoolgirls")
    first_mask = davis2017_sample_root / "Annotations" / "480p" / "schoolgirls" / "00000.png"

    masks = collect_masks([first_mask], frames.names, frame_size=frames.size)

    assert list(masks) == [0]
    mask = masks[0][1]
    assert mask.mode == "P"
    assert mask.object_ids == [1, 2, 3, 4, 5, 6, 7]
    assert mask.palette is not None and mask.palette[: 3 * 8] == DAVIS_PALETTE[: 3 * 8]


def test_the_one_reader_allows_empty_masks_and_opaque_alpha_on_request(tmp_path: Path) -> None:
    empty = np.zeros((4, 6), np.uint8)
    write_label_png(tmp_path / "empty.png", empty)
    assert read_label_png(tmp_path / "empty.png").mode == "P"
    np.testing.assert_array_equal(read_label_png(tmp_path / "empty.png").labels, empty)
    Image.fromarray(_labels((255,)), mode="L").convert("LA").save(tmp_path / "alpha.png")
    with pytest.raises(EmvosInputError, match=r"alpha\.png is a LA-mode image"):
        read_label_png(tmp_path / "alpha.png")
    mask = read_label_png(tmp_path / "alpha.png", opaque_alpha=True)
    assert mask.mode == "L" and mask.object_ids == [255]
    translucent = Image.fromarray(_labels((255,)), mode="L").convert("LA")
    translucent.putalpha(128)
    translucent.save(tmp_path / "translucent.png")
    with pytest.raises(EmvosInputError, match="LA-mode"):
        read_label_png(tmp_path / "translucent.png", opaque_alpha=True)


def test_written_masks_read_back_exactly_in_both_modes(tmp_path: Path) -> None:
    labels = _labels((3, 200))
    for mode in ("P", "L"):
        write_label_png(tmp_path / f"{mode}.png", labels, mode=mode)
        mask = read_label_png(tmp_path / f"{mode}.png")
        assert mask.mode == mode and (mask.palette == DAVIS_PALETTE) == (mode == "P")
        np.testing.assert_array_equal(mask.labels, labels)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["L.png", "P.png"]
    with pytest.raises(ValueError, match="uint8"):
        write_label_png(tmp_path / "x.png", labels.astype(np.int64))
