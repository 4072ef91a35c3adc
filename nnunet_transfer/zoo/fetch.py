"""``zoo fetch``: download a released checkpoint with resume, a progress bar and checksum verification.

pooch does the bookkeeping: it hands the download a temporary file next to the target, checks the sha256 when the
record publishes one (``known_hash``) and moves the file to its final name only when the digest matches; a file
whose digest differs is deleted and never appears under the final name. Our downloader adds resuming: the bytes
received so far live in ``<name>.partial`` and a new attempt asks the server for the rest (HTTP ``Range``); a
server that ignores ``Range`` sends the whole file again, which then replaces the partial one.

pooch is an optional dependency (``pip install nnunet-transfer[zoo]``); everything but ``fetch`` works without it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from nnunet_transfer.errors import NnUNetTransferError
from nnunet_transfer.zoo import get_record
from nnunet_transfer.zoo.record import ZooRecord

__all__ = ["fetch_record", "ResumingDownloader", "PARTIAL_SUFFIX"]

PARTIAL_SUFFIX = ".partial"
CHUNK_BYTES = 1 << 16  # small enough that an interrupted transfer keeps nearly all it received
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


@dataclass
class ResumingDownloader:
    """A pooch downloader (``downloader(url, output_file, pooch)``) that resumes from ``partial``."""

    partial: Path
    progressbar: bool = True
    #: seconds without data before the connection counts as lost (the partial file is kept for the next attempt)
    timeout: float = 60.0

    def __call__(self, url: str, output_file: Union[str, Path], pooch_instance: object = None) -> None:
        import requests
        from tqdm.auto import tqdm

        start = self.partial.stat().st_size if self.partial.is_file() else 0
        headers = {"Range": f"bytes={start}-"} if start else {}
        with requests.get(url, headers=headers, stream=True, timeout=self.timeout) as response:
            if start and response.status_code == 416:  # nothing left to send: the partial file is complete
                total = _total_from(response.headers.get("Content-Range", ""))
                if total == start:
                    os.replace(self.partial, output_file)
                    return
                self.partial.unlink()  # the partial file does not belong to this download: start again
                return self(url, output_file, pooch_instance)
            response.raise_for_status()
            resumed = start > 0 and response.status_code == 206
            if resumed:
                match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
                if not match or int(match[1]) != start:
                    raise NnUNetTransferError(f"{url} answered the resume request with another range "
                                              f"({response.headers.get('Content-Range')!r})", file=self.partial,
                                              fix=f"delete {self.partial} and fetch again")
            else:
                start = 0
            length = response.headers.get("Content-Length")
            total = start + int(length) if length is not None else None
            with open(self.partial, "ab" if resumed else "wb") as out, \
                    tqdm(total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024,
                         desc=Path(self.partial.name[:-len(PARTIAL_SUFFIX)]).name, disable=not self.progressbar,
                         leave=True) as bar:
                for chunk in response.iter_content(chunk_size=CHUNK_BYTES):
                    out.write(chunk)
                    bar.update(len(chunk))
        if total is not None and self.partial.stat().st_size != total:
            raise NnUNetTransferError(f"the download of {url} stopped at {self.partial.stat().st_size} of {total} "
                                      "bytes", file=self.partial, fix="fetch again: it resumes where it stopped")
        os.replace(self.partial, output_file)


def _total_from(content_range: str) -> Optional[int]:
    """The total size in a ``Content-Range: bytes */N`` or ``bytes a-b/N`` header, or None."""
    match = re.search(r"/(\d+)$", content_range.strip())
    return int(match[1]) if match else None


def fetch_record(record: Union[ZooRecord, str], out_dir: Union[str, Path] = ".", progressbar: bool = True
                 ) -> Path:
    """Download ``record``'s file into ``out_dir`` (resuming a partial download) and return its path.

    With a published sha256 the file is kept only when its digest matches (a mismatch raises and leaves nothing at
    the final name). Without one the digest is printed so it can be compared with another source, and ``zoo
    verify`` checks the structure. Records without a direct address raise, naming the page to download from.
    """
    rec = record if isinstance(record, ZooRecord) else get_record(record)
    verify = f"nnunet-transfer zoo verify FILE --record {rec.name}"
    if rec.url is None:
        raise NnUNetTransferError(f"{rec.name} ({rec.file_name}) has no direct download address; its release is "
                                  f"a web page: {rec.page}", fix=f"download it there, then check it: {verify}")
    try:
        import pooch
        import requests
    except ImportError as exc:
        raise NnUNetTransferError("zoo fetch needs the 'pooch' package",
                                  fix="pip install 'nnunet-transfer[zoo]' (or pip install pooch)") from exc
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    partial = out_dir / (rec.file_name + PARTIAL_SUFFIX)
    known_hash = f"sha256:{rec.sha256}" if rec.checksum_published else None
    downloader = ResumingDownloader(partial, progressbar=progressbar)
    try:
        path = pooch.retrieve(rec.url, known_hash=known_hash, fname=rec.file_name, path=out_dir,
                              downloader=downloader, progressbar=progressbar)
    except requests.RequestException as exc:  # connection lost, server error: what arrived stays in .partial
        kept = f"{partial.stat().st_size} bytes kept in {partial}" if partial.is_file() else "nothing kept"
        raise NnUNetTransferError(f"downloading {rec.url} failed ({type(exc).__name__}: {exc}); {kept}",
                                  file=partial, fix="fetch again: it resumes where it stopped") from exc
    except ValueError as exc:  # pooch: the digest differs (the temporary file is already deleted)
        raise NnUNetTransferError(f"refused {rec.url}: {exc}", file=out_dir / rec.file_name,
                                  fix="the file differs from the published release; nothing was kept, fetch "
                                      "again or report the changed release") from exc
    return Path(path)
