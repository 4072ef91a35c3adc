"""The model zoo: its records, `zoo verify` on files in the released formats, and `zoo fetch` against a local HTTP
server (full download, resume with HTTP Range after an interrupted transfer, a refused checksum)."""

from __future__ import annotations

import dataclasses
import hashlib
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from nnunet_transfer.cli.main import main
from nnunet_transfer.errors import NnUNetTransferError
from nnunet_transfer.pretrained.registry import MEDICALNET_CHECKPOINTS
from nnunet_transfer.zoo import NOT_PUBLISHED, RECORDS, get_record, list_records
from nnunet_transfer.zoo.fetch import PARTIAL_SUFFIX, fetch_record
from nnunet_transfer.transfer.zoo_verify import verify_file
from support.nnunet_family import resenc_unet, write_nnssl_checkpoint

PLAN_ARCH_NAMES = {"stunet-s", "stunet-b", "stunet-l", "stunet-h", "suprem-unet", "genesis-unet3d", "swinunetr",
                   "segresnet", "dodnet-unet3d", "primus-m", "swinunetr-v2"}


# ------------------------------------------------------------------------------------------------ records
def test_every_record_is_complete_and_names_are_unique():
    names = [r.name for r in RECORDS]
    assert len(names) == len(set(names))
    for r in RECORDS:
        assert r.citation and r.license and r.page.startswith("https://") and r.format, r.name
        assert r.sha256 == NOT_PUBLISHED or re.fullmatch(r"[0-9a-f]{64}", r.sha256), r.name
        assert r.url is None or r.url.startswith("https://"), r.name
        assert "ID" in r.finetune and "FILE" in r.finetune, r.name
        arch = r.architecture.split()[0]
        assert arch in PLAN_ARCH_NAMES or arch.startswith("med3d-resnet") or "UNet" in arch, r.name
    families = {r.family for r in RECORDS}
    for family in ("nnssl / OpenMind", "STU-Net", "SuPreM", "Models Genesis", "VoCo", "DoDNet",
                   "CLIP-Driven Universal Model", "MultiTalent", "TotalSegmentator", "MedicalNet"):
        assert family in families


def test_window_normalisations_map_onto_the_ranges_the_papers_state():
    ranges = {r.name: r.expected_input.intensity.output_range() for r in RECORDS
              if r.expected_input.intensity.kind == "window"}
    assert ranges["suprem-unet"] == (0.0, 1.0) and ranges["genesis-unet3d"] == (0.0, 1.0)
    assert ranges["dodnet-unet3d"] == (-1.0, 1.0)


def test_medicalnet_registry_is_the_zoos_medicalnet_family():
    zoo_files = [r.file_name for r in list_records("medicalnet")]
    assert [c.file_name for c in MEDICALNET_CHECKPOINTS] == zoo_files and len(zoo_files) == 11
    assert get_record("resnet_50_23dataset.pth").details["depth"] == 50


def test_lookup_by_name_file_name_and_ambiguous_file_name():
    assert get_record("suprem-unet").file_name == "supervised_suprem_unet_2100.pth"
    assert get_record("supervised_suprem_unet_2100.pth").name == "suprem-unet"
    with pytest.raises(NnUNetTransferError, match="openmind-resencl-mae"):
        get_record("checkpoint_final.pth")  # every OpenMind repository releases this name
    with pytest.raises(NnUNetTransferError, match="did you mean 'suprem-unet'"):
        get_record("suprem-unt")


# ------------------------------------------------------------------------------------------------- verify
def test_verify_accepts_an_nnssl_file_by_structure_and_says_the_checksum_is_unpublished(tmp_path):
    path = write_nnssl_checkpoint(tmp_path / "checkpoint_final.pth", resenc_unet())
    report = verify_file(path, "openmind-resencl-mae")
    assert report.ok, str(report)
    assert [c for c, _, _ in report.checks] == ["registered", "loads safely", "release format", "architecture"]
    assert report.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert "only the structure was checked" in str(report)
    # the same file is not a Primus-M checkpoint: its adaptation plan and its tensor names say so
    wrong = verify_file(path, "openmind-primusm-vf")
    assert not wrong.ok
    assert {c for c, p, _ in wrong.checks if not p} == {"release format", "architecture"}


def test_verify_checks_the_markers_of_state_dict_releases(tmp_path):
    unet3d = {"module.backbone.down_tr64.ops.0.conv1.weight": torch.zeros(32, 1, 3, 3, 3),
              "module.backbone.out_tr.final_conv.weight": torch.zeros(2, 64, 1, 1, 1)}
    good = tmp_path / "supervised_suprem_unet_2100.pth"
    torch.save({"net": unet3d}, good)
    assert verify_file(good).ok
    other = tmp_path / "other.pth"
    torch.save({"net": {"module.convInit.conv.weight": torch.zeros(8, 1, 3, 3, 3)}}, other)
    report = verify_file(other, "suprem-unet")
    assert not report.ok and "not a suprem-unet checkpoint" in str(report)


def test_verify_refuses_a_published_checksum_that_differs(tmp_path):
    path = write_nnssl_checkpoint(tmp_path / "checkpoint_final.pth", resenc_unet())
    record = dataclasses.replace(get_record("openmind-resencl-mae"), sha256="0" * 64)
    report = verify_file(path, record)
    assert [(c, p) for c, p, _ in report.checks][-1] == ("sha256", False)
    right = dataclasses.replace(record, sha256=hashlib.sha256(path.read_bytes()).hexdigest())
    assert verify_file(path, right).ok


def test_verify_cli_and_its_verify_weights_alias(tmp_path, capsys):
    unknown = tmp_path / "mystery.pth"
    torch.save({"a": torch.zeros(1)}, unknown)
    assert main(["zoo", "verify", str(unknown)]) == 1
    assert "no zoo record releases a file named 'mystery.pth'" in capsys.readouterr().out
    path = write_nnssl_checkpoint(tmp_path / "checkpoint_final.pth", resenc_unet())
    assert main(["zoo", "verify", str(path), "--record", "openmind-resencl-vf"]) == 0
    assert main(["verify-weights", str(path), "--record", "openmind-resencl-vf"]) == 0


def test_list_and_show_print_citation_checksum_and_command(capsys):
    assert main(["zoo", "list"]) == 0
    out = capsys.readouterr().out
    assert all(r.name in out for r in RECORDS) and "not published" in out and "cite: Li W" in out
    assert main(["zoo", "show", "suprem-unet"]) == 0
    out = capsys.readouterr().out
    assert "[-175, 250]" in out and "plan-arch -d ID -a suprem-unet" in out and "dl=1" in out


# -------------------------------------------------------------------------------------------------- fetch
class _Server:
    """A file server on 127.0.0.1 for one payload, with HTTP Range support; it can cut the first transfer short.

    Bounded: it shuts itself down after ``lifetime`` seconds even if a test forgets to.
    """

    def __init__(self, payload: bytes, cut_first_after: int | None = None, lifetime: float = 60.0):
        self.payload, self.cut = payload, cut_first_after
        self.requests: list[str | None] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 10

            def log_message(self, *args):  # keep the test output clean
                pass

            def do_GET(self):
                header = self.headers.get("Range")
                server.requests.append(header)
                start = int(re.fullmatch(r"bytes=(\d+)-", header)[1]) if header else 0
                body = server.payload[start:]
                self.send_response(206 if header else 200)
                if header:
                    self.send_header("Content-Range", f"bytes {start}-{len(server.payload) - 1}/"
                                                      f"{len(server.payload)}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.cut is not None and len(server.requests) == 1:
                    self.wfile.write(body[:server.cut])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.stopper = threading.Timer(lifetime, self.httpd.shutdown)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/weights.pth"

    def __enter__(self) -> "_Server":
        self.thread.start()
        self.stopper.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopper.cancel()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


def _record(url: str, payload: bytes = PAYLOAD, sha256: str | None = None):
    digest = sha256 or hashlib.sha256(payload).hexdigest()
    return dataclasses.replace(get_record("suprem-unet"), url=url, sha256=digest, file_name="weights.pth")


def test_fetch_downloads_and_checks_the_published_sha256(tmp_path):
    with _Server(PAYLOAD) as server:
        path = fetch_record(_record(server.url), tmp_path, progressbar=False)
    assert path == tmp_path / "weights.pth" and path.read_bytes() == PAYLOAD
    assert server.requests == [None]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["weights.pth"]


def test_fetch_resumes_an_interrupted_download_with_http_range(tmp_path):
    record = _record("")
    with _Server(PAYLOAD, cut_first_after=300_000) as server:
        record = dataclasses.replace(record, url=server.url)
        with pytest.raises(NnUNetTransferError, match="resumes where it stopped"):
            fetch_record(record, tmp_path, progressbar=False)
        partial = tmp_path / ("weights.pth" + PARTIAL_SUFFIX)
        kept = partial.stat().st_size  # whole chunks received before the cut
        assert 200_000 < kept <= 300_000 and not (tmp_path / "weights.pth").exists()
        path = fetch_record(record, tmp_path, progressbar=False)
    assert server.requests == [None, f"bytes={kept}-"]
    assert path.read_bytes() == PAYLOAD and not partial.exists()


def test_fetch_refuses_a_file_whose_hash_differs_and_keeps_nothing(tmp_path):
    with _Server(PAYLOAD) as server:
        with pytest.raises(NnUNetTransferError, match="refused"):
            fetch_record(_record(server.url, sha256="f" * 64), tmp_path, progressbar=False)
    assert list(tmp_path.iterdir()) == []  # not at the final name, no partial, no temporary file


def test_fetch_without_an_address_names_the_page(tmp_path):
    with pytest.raises(NnUNetTransferError, match="github.com/uni-medical/STU-Net"):
        fetch_record("stunet-b", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_the_docs_list_every_record_with_its_architecture():
    page = (Path(__file__).parents[1] / "docs" / "public-models.md").read_text()
    for r in RECORDS:
        assert f"| `{r.name}` | {r.family} | `{r.architecture}` |" in page, r.name
