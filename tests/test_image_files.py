"""Saved images and their infotext: the suffix sets the format (PNG text chunk, JPEG/WebP EXIF UserComment as
A1111 writes it), saves are exclusive unless ``overwrite=True`` (8 racing threads: exactly one wins), new files
get the umask, disk errors name the target; damaged or foreign files read as one clear error.

Outside oracles: Pillow identifies the written formats and decodes them; the EXIF of A1111's JPEGs is built here
byte by byte, as ``piexif.dump``/``piexif.insert`` lay it out (A1111's ``modules/images.py`` calls them with
``UserComment.dump(geninfo, encoding="unicode")``), and the EXIF we write is parsed by hand per the TIFF layout.
"""

from __future__ import annotations

import errno
import io
import os
import struct
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from sdkit import metadata
from sdkit.cli import main
from sdkit.loading import open_image, read_image_parameters, save_image, save_png

INFOTEXT = (
    'a cat, ünïcødé 猫 "quoted"\nNegative prompt: dog\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 64x64'
)
FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".PNG": "PNG", ".JPG": "JPEG"}


def picture(seed: int = 0, mode: str = "RGB") -> PILImage.Image:
    rng = np.random.default_rng(seed)
    return PILImage.fromarray(rng.integers(0, 256, (24, 32, len(mode)), dtype=np.uint8), mode)


# ------------------------------------------------------------------------------------------ formats
@pytest.mark.parametrize("suffix", list(FORMATS))
def test_the_suffix_sets_the_format_and_the_infotext_reads_back(tmp_path, suffix):
    path = save_image(picture(), tmp_path / f"out{suffix}", INFOTEXT)
    with PILImage.open(path) as im:
        assert im.format == FORMATS[suffix] and im.size == (32, 24)
    assert read_image_parameters(path) == INFOTEXT
    assert metadata.read(path)["steps"] == 20 and metadata.read(path)["negative_prompt"] == "dog"


def exif_entries(tiff: bytes, ifd_offset: int) -> dict[int, tuple[int, bytes]]:
    """TIFF IFD entries (tag -> (type, value bytes)) read by hand: 2-byte count, 12-byte entries of tag, type,
    count and value-or-offset (the value is inline when it fits 4 bytes). Big-endian ("MM") TIFF only."""
    assert tiff[:4] == b"MM\0\x2a"
    sizes = {1: 1, 2: 1, 3: 2, 4: 4, 7: 1}
    (count,) = struct.unpack(">H", tiff[ifd_offset : ifd_offset + 2])
    entries = {}
    for i in range(count):
        tag, kind, n, value = struct.unpack(">HHII", tiff[ifd_offset + 2 + 12 * i : ifd_offset + 14 + 12 * i])
        size = sizes[kind] * n
        raw = tiff[ifd_offset + 10 + 12 * i : ifd_offset + 10 + 12 * i + size] if size <= 4 else tiff[value:][:size]
        entries[tag] = (kind, raw)
    return entries


@pytest.mark.parametrize("suffix", [".jpg", ".webp"])
def test_exif_user_comment_is_laid_out_as_a1111_writes_it(tmp_path, suffix):
    path = save_image(picture(), tmp_path / f"out{suffix}", INFOTEXT)
    with PILImage.open(path) as im:
        exif = im.info["exif"]
    tiff = exif.removeprefix(b"Exif\0\0")  # JPEG's APP1 starts with it; WebP's EXIF chunk does not
    ifd0 = exif_entries(tiff, struct.unpack(">I", tiff[4:8])[0])
    kind, pointer = ifd0[0x8769]  # ExifIFDPointer, a LONG
    exif_ifd = exif_entries(tiff, struct.unpack(">I", pointer)[0])
    kind, comment = exif_ifd[0x9286]  # UserComment
    assert kind == 7  # UNDEFINED, as the EXIF standard types it (piexif reads BYTE as a tuple of ints)
    assert comment == b"UNICODE\0" + INFOTEXT.encode("utf-16-be")


def test_jpeg_keeps_no_alpha_and_webp_does(tmp_path):
    rgba = picture(3, "RGBA")
    with PILImage.open(save_image(rgba, tmp_path / "a.jpg", INFOTEXT)) as im:
        assert im.mode == "RGB"
    with PILImage.open(save_image(rgba, tmp_path / "a.webp", INFOTEXT)) as im:
        assert im.mode == "RGBA"
    assert read_image_parameters(tmp_path / "a.webp") == INFOTEXT


def test_infotext_too_long_for_a_jpeg_is_refused_naming_the_parameter(tmp_path):
    with pytest.raises(ValueError, match=r"parameters: 40000 characters .* JPEG's EXIF segment \(64 KiB\)"):
        save_image(picture(), tmp_path / "long.jpg", "x" * 40000)
    assert read_image_parameters(save_image(picture(), tmp_path / "long.webp", "x" * 40000)) == "x" * 40000
    assert list(tmp_path.iterdir()) == [tmp_path / "long.webp"]


@pytest.mark.parametrize("name", ["out.gif", "out.bmp", "out", "out.png.tmp", "out.tiff"])
def test_other_suffixes_are_refused_naming_the_path_and_the_allowed_ones(tmp_path, name):
    with pytest.raises(ValueError) as info:
        save_image(picture(), tmp_path / name, INFOTEXT)
    message = str(info.value)
    assert str(tmp_path / name) in message and ".png, .jpg, .jpeg, .webp" in message and "\n" not in message
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("overwrite", ["no", 1, None])
def test_overwrite_must_be_a_boolean(tmp_path, overwrite):
    with pytest.raises(
        TypeError, match=f"overwrite must be True or False, got {type(overwrite).__name__} {overwrite!r}"
    ):
        save_png(picture(), tmp_path / "o.png", INFOTEXT, overwrite=overwrite)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------ exclusive saves
def race(path: Path, images: list[PILImage.Image]) -> dict[int, BaseException | None]:
    """Save each image to ``path`` from its own thread, all released at once; what each save raised (or None)."""
    barrier = threading.Barrier(len(images))
    outcome: dict[int, BaseException | None] = {}

    def save(i: int) -> None:
        barrier.wait()
        try:
            save_image(images[i], path, f"image {i}\nSteps: 1", overwrite=False)
            outcome[i] = None
        except BaseException as e:
            outcome[i] = e

    threads = [threading.Thread(target=save, args=(i,)) for i in range(len(images))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcome


def test_racing_saves_to_one_new_path_one_wins_and_the_file_is_whole(tmp_path):
    """Eight threads save eight different images to one new path with overwrite=False, 20 times: exactly one
    succeeds, the seven others raise FileExistsError naming the path, and the file is the winner's, whole."""
    images = [picture(seed) for seed in range(8)]
    for attempt in range(20):
        path = tmp_path / f"race-{attempt}.png"
        outcome = race(path, images)
        winners = [i for i, e in outcome.items() if e is None]
        assert len(winners) == 1, outcome
        losers = [e for e in outcome.values() if e is not None]
        assert all(isinstance(e, FileExistsError) and str(path) in str(e) for e in losers), losers
        (w,) = winners
        assert read_image_parameters(path) == f"image {w}\nSteps: 1"
        assert np.array_equal(np.asarray(open_image(path)), np.asarray(images[w]))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"race-{k}.png" for k in range(20))


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077, 0o002])
@pytest.mark.parametrize("overwrite", [False, True])
def test_new_files_get_the_umask(tmp_path, umask, overwrite):
    path = tmp_path / "out.png"
    if overwrite:
        path.write_bytes(b"old")
        path.chmod(0o600)
    old = os.umask(umask)
    try:
        save_image(picture(), path, INFOTEXT, overwrite=overwrite)
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


# ------------------------------------------------------------------------------------------ disk errors
@pytest.mark.parametrize("existing", [False, True])
def test_a_full_disk_names_the_target_and_leaves_nothing(tmp_path, monkeypatch, existing):
    path = tmp_path / "out.png"
    if existing:
        path.write_bytes(b"old")

    def full(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as m:
        m.setattr(os, "write", full)
        with pytest.raises(OSError) as info:
            save_image(picture(), path, INFOTEXT, overwrite=existing)
    message = str(info.value)
    assert info.value.errno == errno.ENOSPC and "\n" not in message
    assert f"could not write {path} (No space left on device)" in message and ".tmp" not in message
    assert os.listdir(tmp_path) == (["out.png"] if existing else [])
    assert not existing or path.read_bytes() == b"old"


def test_a_read_only_folder_names_the_target(tmp_path, monkeypatch):
    """The refusal a read-only folder gives (EACCES on creating a file in it), simulated: as root, which runs
    these tests in containers, a chmod would not stop the write."""
    real_open = os.open

    def read_only(file, flags, *args, **kwargs):  # noqa: ANN001
        if Path(file).parent == tmp_path and flags & os.O_CREAT:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(file))
        return real_open(file, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    with pytest.raises(PermissionError) as info:
        save_image(picture(), tmp_path / "out.jpg", INFOTEXT)
    assert str(info.value).endswith(f"output: could not write {tmp_path / 'out.jpg'} (Permission denied)")
    assert ".tmp" not in str(info.value) and os.listdir(tmp_path) == []


def test_a_missing_folder_names_the_target(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"cannot write {tmp_path / 'no' / 'out.png'}: folder"):
        save_image(picture(), tmp_path / "no" / "out.png", INFOTEXT)


# ------------------------------------------------------------------------------------------ outside files
def a1111_exif(text: str) -> bytes:
    """EXIF as ``piexif.dump({"Exif": {ExifIFD.UserComment: UserComment.dump(text, encoding="unicode")}})``
    writes it: "Exif\\0\\0", a big-endian TIFF header, IFD0 with one entry (the Exif IFD pointer, LONG) and a
    zero next-IFD link, then the Exif IFD with one UNDEFINED entry and no next-IFD link, then the value."""
    comment = b"UNICODE\0" + text.encode("utf_16_be")
    ifd0 = struct.pack(">H", 1) + struct.pack(">HHII", 0x8769, 4, 1, 8 + 18) + b"\0\0\0\0"
    exif_ifd = struct.pack(">H", 1) + struct.pack(">HHII", 0x9286, 7, len(comment), 8 + 18 + 14)
    return b"Exif\0\0" + b"MM\0\x2a\0\0\0\x08" + ifd0 + exif_ifd + comment


def insert_app1(jpeg: bytes, exif: bytes) -> bytes:
    """``piexif.insert`` for a JPEG: an APP1 segment (0xFFE1, big-endian length counting itself) after the
    JFIF APP0 segment that follows the SOI marker."""
    assert jpeg[:4] == b"\xff\xd8\xff\xe0"
    after_app0 = 4 + struct.unpack(">H", jpeg[4:6])[0]
    return jpeg[:after_app0] + b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif + jpeg[after_app0:]


def test_reads_a_jpeg_written_as_a1111_writes_it(tmp_path):
    buffer = io.BytesIO()
    picture().save(buffer, format="JPEG", quality=80)
    path = tmp_path / "00001-42.jpg"
    path.write_bytes(insert_app1(buffer.getvalue(), a1111_exif(INFOTEXT)))
    assert read_image_parameters(path) == INFOTEXT
    assert metadata.read(path)["seed"] == 1


def test_reads_little_endian_utf16_and_ascii_comments(tmp_path):
    """Other writers (exiftool on a little-endian TIFF) store UNICODE comments as UTF-16LE; ASCII ones too."""
    for comment in (b"UNICODE\0" + INFOTEXT.encode("utf-16-le"), b"ASCII\0\0\0" + b"a dog\nSteps: 3"):
        exif = PILImage.Exif()
        exif.get_ifd(0x8769)[0x9286] = comment
        path = tmp_path / "x.jpg"
        picture().save(path, format="JPEG", exif=exif.tobytes())
        expected = INFOTEXT if comment.startswith(b"UNICODE") else "a dog\nSteps: 3"
        assert read_image_parameters(path) == expected


def png_chunks(data: bytes) -> list[tuple[int, bytes]]:
    """(offset, type) of each chunk of a PNG (8-byte signature, then length, type, data, CRC-32 chunks)."""
    out, i = [], 8
    while i < len(data):
        (n,) = struct.unpack(">I", data[i : i + 4])
        out.append((i, data[i + 4 : i + 8]))
        i += 12 + n
    return out


def flip_in_chunk(png: bytes, kind: bytes, at: int) -> bytes:
    """``png`` with one byte of a chunk's data changed, so that the chunk's CRC-32 (over type and data) fails."""
    offset = next(o for o, k in png_chunks(png) if k == kind)
    (n,) = struct.unpack(">I", png[offset : offset + 4])
    out = bytearray(png)
    out[offset + 8 + at] ^= 0x01
    stored = struct.unpack(">I", out[offset + 8 + n : offset + 12 + n])[0]
    assert zlib.crc32(bytes(out[offset + 4 : offset + 8 + n])) != stored
    return bytes(out)


def damaged_files(tmp_path: Path) -> dict[str, Path]:
    good = save_image(picture(), tmp_path / "good.png", INFOTEXT).read_bytes()
    jpeg = io.BytesIO()
    picture().save(jpeg, format="JPEG")
    files = {
        "not an image": b"just some text, not a picture\n",
        "empty": b"",
        "truncated PNG": good[: len(good) // 2],
        "bad IDAT CRC": flip_in_chunk(good, b"IDAT", 10),
        "bad text CRC": flip_in_chunk(good, b"iTXt", 20),
        "PNG signature only": good[:8],
        "truncated JPEG": jpeg.getvalue()[: len(jpeg.getvalue()) // 2],
    }
    paths = {}
    for name, data in files.items():
        paths[name] = tmp_path / (name.replace(" ", "_") + (".jpg" if "JPEG" in name else ".png"))
        paths[name].write_bytes(data)
    return paths


def test_damaged_or_foreign_files_are_one_clear_error(tmp_path):
    for name, path in damaged_files(tmp_path).items():
        for read in (open_image, read_image_parameters):
            with pytest.raises(ValueError) as info:
                read(path)
            message = str(info.value)
            assert str(path) in message and "\n" not in message and "not a readable image" in message, (name, message)


@pytest.mark.parametrize("case", ["not an image", "empty", "truncated PNG", "bad IDAT CRC", "bad text CRC"])
def test_sdkit_info_on_a_damaged_file_is_one_line_and_exit_2(tmp_path, capsys, case):
    path = damaged_files(tmp_path)[case]
    assert main(["info", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and str(path) in err and "Traceback" not in err


def test_sdkit_info_without_parameters_missing_file_and_folder(tmp_path, capsys):
    picture().save(tmp_path / "plain.png")
    picture().save(tmp_path / "plain.jpg")
    for path in (tmp_path / "plain.png", tmp_path / "plain.jpg", tmp_path / "missing.png", tmp_path):
        assert main(["info", str(path)]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and str(path) in err, err
    assert "no 'parameters' text chunk or EXIF UserComment" in (
        main(["info", str(tmp_path / "plain.jpg")]) and capsys.readouterr().err
    )


def test_sdkit_info_prints_the_infotext_of_each_format(tmp_path, capsys):
    for suffix in (".png", ".jpg", ".webp"):
        path = save_image(picture(), tmp_path / f"out{suffix}", INFOTEXT)
        assert main(["info", str(path)]) == 0
        assert capsys.readouterr().out == INFOTEXT + "\n"
