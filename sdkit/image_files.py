"""Image files: saving images with their infotext and reading it back, as A1111 does.

Images are saved in the format their suffix names (PNG, JPEG, WebP) with their infotext where A1111 puts it: a PNG's
``parameters`` text chunk, the EXIF UserComment of a JPEG or WebP. A file appears whole or not at all, exclusively
unless ``overwrite=True``. Reading accepts sdkit's and A1111's files; a missing, damaged or unknown file is one
``ValueError`` naming it. ``sdkit.metadata`` parses the infotext, ``Generation.save`` and the CLI write it.
"""

from __future__ import annotations

import contextlib
import os
import struct
from pathlib import Path
from typing import TYPE_CHECKING

from sdkit.errors import error_line
from sdkit.limits import check_bool
from sdkit.names import IMAGE_FORMATS  # in a torch-free module, so the CLI checks -o before importing torch

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

EXIF_IFD, USER_COMMENT = 0x8769, 0x9286  # EXIF tags: the Exif sub-IFD pointer, and UserComment within it
UNICODE_PREFIX = b"UNICODE\0"  # EXIF's character-code prefix of a UTF-16 UserComment


def save_image(image: PILImage, path: str | Path, parameters: str, *, overwrite: bool = False) -> Path:
    """Save an image with its infotext as A1111 does: ``.png`` in a ``parameters`` text chunk, ``.jpg``/``.jpeg``/
    ``.webp`` in the EXIF UserComment. The file appears whole or not at all, with the permissions of any new file
    (the umask); ``overwrite=False`` never replaces a file, even one another process creates meanwhile."""
    from PIL import Image

    path = Path(path)
    check_bool("overwrite", overwrite)
    if not isinstance(image, Image.Image):
        raise TypeError(f"image must be a PIL image, got {type(image).__name__}")
    fmt = IMAGE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"output: {path} must end in {', '.join(IMAGE_FORMATS)} (the suffix sets the format)")
    if not isinstance(parameters, str) or not parameters.strip():
        raise ValueError(
            f"parameters must be the image's non-empty infotext (every saved image carries it), got {parameters!r}"
        )
    if path.exists() and not overwrite:  # the early answer; the exclusive link below is the guarantee
        raise FileExistsError(f"output: {path} exists; pass overwrite=True (CLI: --overwrite) to replace it")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"output: cannot write {path}: folder {path.parent} does not exist")
    write_file(path, encode_image(image, fmt, parameters), overwrite=overwrite)
    return path


save_png = save_image  # the name Generation.save and older code call; the suffix chooses the format


def encode_image(image: PILImage, fmt: str, parameters: str) -> bytes:
    """The bytes of ``image`` in ``fmt`` (PNG, JPEG, WEBP), carrying ``parameters``."""
    import io

    from PIL.PngImagePlugin import PngInfo

    buffer = io.BytesIO()
    if fmt == "PNG":
        info = PngInfo()
        info.add_text("parameters", parameters)  # tEXt, or iTXt (UTF-8) when the text is not Latin-1
        image.save(buffer, format="PNG", pnginfo=info)
        return buffer.getvalue()
    if image.mode not in (("L", "RGB") if fmt == "JPEG" else ("RGB", "RGBA")):
        image = image.convert("RGBA" if fmt == "WEBP" and "A" in image.getbands() else "RGB")
    exif = exif_user_comment(parameters)
    if fmt == "JPEG" and len(exif) > 65533:  # one APP1 segment: 64 KiB, so about 32,000 characters of UTF-16
        raise ValueError(
            f"parameters: {len(parameters)} characters of infotext do not fit a JPEG's EXIF segment (64 KiB); "
            "save as .png or .webp"
        )
    image.save(buffer, format=fmt, quality=95, exif=exif)
    return buffer.getvalue()


def exif_user_comment(text: str) -> bytes:
    """EXIF holding ``text`` as the UserComment, as A1111 writes it (``piexif.dump`` of
    ``UserComment.dump(text, encoding="unicode")``): a big-endian TIFF whose IFD0 points to an Exif IFD with one
    UNDEFINED-typed (7) entry, 0x9286, whose value is ``UNICODE\\0`` and the text in UTF-16BE."""
    comment = UNICODE_PREFIX + text.encode("utf-16-be")
    ifd0 = struct.pack(">HHHII", 1, EXIF_IFD, 4, 1, 26) + b"\0\0\0\0"  # 1 entry (LONG offset of the Exif IFD)
    exif_ifd = struct.pack(">HHHII", 1, USER_COMMENT, 7, len(comment), 44) + b"\0\0\0\0"
    return b"Exif\0\0" + b"MM\0\x2a" + struct.pack(">I", 8) + ifd0 + exif_ifd + comment


def read_user_comment(exif: bytes) -> str | None:
    """The UserComment of an EXIF block as A1111 reads it, or None. The EXIF character codes: ``UNICODE\\0`` then
    UTF-16 (A1111/piexif write big-endian; some tools little-endian, told apart by where the zero bytes of
    ASCII text fall), ``ASCII\\0\\0\\0``, ``JIS\\0\\0\\0\\0\\0``; any other prefix is read as UTF-8, as A1111 does."""
    from PIL import Image

    data = Image.Exif()
    data.load(exif)
    raw = data.get_ifd(EXIF_IFD).get(USER_COMMENT)
    if isinstance(raw, tuple):  # written as BYTE rather than UNDEFINED
        raw = bytes(raw)
    if not isinstance(raw, bytes) or not raw:
        return raw if isinstance(raw, str) and raw else None
    prefix, body = raw[:8], raw[8:]
    if prefix == UNICODE_PREFIX:
        big_endian = body[0::2].count(0) >= body[1::2].count(0)
        text = body.decode("utf-16-be" if big_endian else "utf-16-le", errors="replace")
    elif prefix == b"ASCII\0\0\0":
        text = body.decode("ascii", errors="replace")
    elif prefix == b"JIS\0\0\0\0\0":
        text = body.decode("shift_jis", errors="replace")
    else:
        text = raw.decode("utf-8", errors="ignore")
    return text.rstrip("\0") or None


def write_file(path: Path, data: bytes, *, overwrite: bool) -> None:
    """Write ``data`` to a temporary file beside ``path``, then move it into place: ``os.replace`` to overwrite,
    ``os.link`` (which fails if ``path`` exists, atomically) otherwise. The temporary file is created like any new
    file (mode 0o666 less the umask). A failure names ``path`` and leaves nothing behind."""
    import errno
    import secrets

    tmp = path.with_name(f".sdkit-{secrets.token_hex(6)}.tmp")  # short: a target name near NAME_MAX still fits
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise
            except OSError as e:  # a file system without hard links: exclusive creation of the target itself
                if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK):
                    raise
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
    except FileExistsError:
        raise FileExistsError(f"output: {path} exists (created meanwhile); pass overwrite=True to replace it") from None
    except OSError as e:
        raise OSError(e.errno, f"output: could not write {path} ({e.strerror or e})") from None
    finally:
        with contextlib.suppress(OSError):  # cleaning up must never replace the error that names the target
            tmp.unlink(missing_ok=True)


def _opened(path: str | Path) -> PILImage:
    """The decoded image (file closed; ``.info`` holds its text chunks and EXIF). A missing, damaged or unknown
    file is one ValueError naming it, never a raw PIL error: PNG chunk checksums are verified first."""
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"image: {path} does not exist (or is not a file)")
    try:
        with Image.open(path) as im:
            im.verify()  # PNG: every chunk's CRC up to IEND, without decoding
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, EOFError, struct/zlib errors, ...
        raise ValueError(f"image: {path} is not a readable image ({error_line(e)})") from None


def read_image_parameters(path: str | Path) -> str:
    """The infotext of an image written by sdkit or A1111: a PNG's ``parameters`` text chunk, or the EXIF
    UserComment of a JPEG or WebP (or a PNG)."""
    im = _opened(path)
    text = im.info.get("parameters")
    if text is None and im.info.get("exif"):
        try:
            text = read_user_comment(im.info["exif"])
        except Exception as e:
            raise ValueError(f"image: {path} has unreadable EXIF ({error_line(e)})") from None
    if not text:
        raise ValueError(
            f"image: {path} has no 'parameters' text chunk or EXIF UserComment (not written by sdkit/A1111?)"
        )
    return str(text)


read_png_parameters = read_image_parameters  # the name metadata.read and older code call


def open_image(path: str | Path) -> PILImage:
    """A PIL image read whole from ``path``; a damaged or unknown file is one ValueError naming it."""
    return _opened(path)
