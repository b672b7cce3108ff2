"""Hostile input: names, record texts and files made to attack whoever reads tlbench's output
(markdown and LaTeX readers, the terminal, the memory of `tlbench report`)."""

import re

import numpy as np
import pytest
from test_report import GRID, record, write_all

SCRIPT = "<script>alert(1)</script>"
IMAGE = "<img src=x onerror=alert(1)>"


def hostile_records():
    """Records whose names and texts carry HTML, a table break, a heading and a link."""
    dataset = f"digits{SCRIPT}\n\\input{{/etc/passwd}}"
    return [record(dataset, IMAGE, "probe\n\n# injected heading", 0, 0.9,
                   warnings=[f"seed 0 | {SCRIPT}\n\n## also injected"]),
            record(dataset, IMAGE, "probe\n\n# injected heading", 1, 0.8),
            record(dataset, "lite0", "scratch", 0, 0.5, pretrained=False),
            record(dataset, "lite0", "[click](javascript:alert(1))", 0, status="failed",
                   error=f"RuntimeError: {IMAGE}\n| a | b |")]


def test_hostile_names_reach_the_markdown_and_latex_as_text(tmp_path, cli):
    write_all(tmp_path, hostile_records())
    code, out, err = cli("report", "--results", tmp_path)
    assert code == 0, err
    md = (tmp_path / GRID / "leaderboard.md").read_text()
    assert "<script" not in md and "<img" not in md and "[click](" not in md
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in md and "&lt;img src=x onerror=alert(1)&gt;" in md
    assert not re.search(r"^#+ (injected|also)", md, re.M)  # no heading of its own
    for table in re.findall(r"(?:^\|.*\n)+", md, re.M):  # every row has its header's columns
        columns = {len(re.split(r"(?<!\\)\|", line)) for line in table.splitlines()}
        assert len(columns) == 1, table
    for name, tex in ((p.name, p.read_text()) for p in (tmp_path / GRID).glob("*.tex")):
        comment, *body = tex.splitlines()  # a name in the comment, on its line; escaped below it
        rules = {"\\toprule", "\\midrule", "\\bottomrule", "\\end{tabular}"}
        assert comment.startswith("% ") and body[0].startswith("\\begin{tabular}"), name
        assert all(line in rules or line.endswith(" \\\\") for line in body[1:]), name
        assert "<script" not in "".join(body) and "\n\n" not in tex, name


def test_hostile_names_reach_the_ranking_markdown_as_text():
    from tlbench.rank import PairScores, Ranking, to_markdown

    pair = PairScores(f"faces{SCRIPT}", "vit|\n# heading", scores={"logme": 0.5, "broken": None},
                      errors={"broken": f"RuntimeError: {IMAGE}\n\n## more"})
    md = to_markdown(Ranking(f"zoo\n{IMAGE}", ["logme", "broken"], [], [pair], {}, {},
                             options={"logme": {"note": SCRIPT}}))
    assert "<script" not in md and "<img" not in md
    assert not re.search(r"^#+ (heading|more|&lt;img)", md, re.M)
    table = [line for line in md.splitlines() if line.startswith("|")]
    assert len({len(re.split(r"(?<!\\)\|", line)) for line in table}) == 1, table


# -- the terminal ------------------------------------------------------------------------------

RETITLE, CLEAR = "\x1b]0;owned\x07", "\x1b[2J"


def test_escape_sequences_in_records_and_file_names_are_printed_visibly(tmp_path, cli):
    results = tmp_path / f"r{CLEAR}"
    write_all(results, [record(f"digits{RETITLE}", "lite0", "probe", 0, status="failed",
                               error=f"OSError: cannot read img{CLEAR}.png\r"),
                        record(f"digits{RETITLE}", "lite0", "probe", 1, 0.9, warnings=[f"at chance{CLEAR}"]),
                        record("digits", "lite0\nfake  row", "probe", 0, 0.5)])
    printed = ""
    for command in (("runs", "--results", results), ("report", "--results", results),
                    ("runs", "--results", results, "--backbone", f"none{CLEAR}")):
        code, out, err = cli(*command)
        printed += out + err
    assert "\x1b" not in printed and "\r" not in printed and "\x07" not in printed
    assert "\\x1b]0;owned\\x07" in printed and "r\\x1b[2J" in printed
    assert not any(line.lstrip().startswith("fake") for line in printed.splitlines())  # no line of its own
    from tlbench.report import build_leaderboard, terminal_summary

    summary = terminal_summary(build_leaderboard(results, GRID))
    assert "\x1b" not in summary and not any(line.lstrip("| ").startswith("fake") for line in summary.splitlines())


def test_progress_lines_show_escape_sequences_visibly():
    import io

    from tlbench.progress import Progress

    stream = io.StringIO()
    progress = Progress(stream=stream)
    progress.grid_start(total=1, already_done=0)
    progress.cell_start(f"lite0 / probe / digits{RETITLE}")
    progress.cell_done(f"lite0 / probe / digits{RETITLE}",
                       {"status": "failed", "error": f"boom{CLEAR}", "warnings": [f"w{CLEAR}"]})
    assert "\x1b" not in stream.getvalue() and "\\x1b[2J" in stream.getvalue()


def test_the_summarys_own_bold_still_reaches_a_terminal():
    import io

    from tlbench.literal_text import PrintableStream

    stream = io.StringIO()
    print(f"\x1b[1mbest\x1b[0m {CLEAR}", file=PrintableStream(stream))
    assert stream.getvalue() == "\x1b[1mbest\x1b[0m \\x1b[2J\n"


# -- what a results folder holds -----------------------------------------------------------------


def test_fifos_devices_and_huge_files_named_as_records_are_unreadable_never_a_hang(tmp_path, cli):
    import os
    import signal

    write_all(tmp_path, [record("digits", "lite0", "probe", 0, 0.9)])
    folder = tmp_path / GRID / "records"
    os.mkfifo(folder / "fifo.json")
    os.mkfifo(folder / "other.lock")  # a claim's name: `runs` reads who holds it
    os.mkfifo(tmp_path / GRID / "grid.json")  # the grid snapshot's
    (folder / "zero.json").symlink_to("/dev/zero")
    with open(folder / "huge.json", "wb") as handle:
        handle.truncate(17 * 2**20)  # sparse: larger than any record, and nothing to write

    class Hung(Exception):  # not an OSError (TimeoutError is one): nothing may take it for a bad file
        pass

    def hung(*_):
        raise Hung("hung reading a records folder")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(20)
    try:
        code, out, err = cli("runs", "--results", tmp_path)
        assert code == 0 and "1 record(s): 1 ok" in out, err
        warnings = err.splitlines()
        assert len(warnings) == 3 and all(w.startswith("warning: corrupt record") for w in warnings), err
        assert "(unreadable: a FIFO, not a regular file)" in err
        assert "(unreadable: a character device, not a regular file)" in err
        assert "(unreadable: over 16,777,216 bytes" in err
        code, out, err = cli("report", "--results", tmp_path)
        assert code == 0 and "Traceback" not in err, err
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    # read-only commands leave what they cannot read where it is (only `run` sets records aside)
    assert not (folder / "corrupt").exists()
    assert {"fifo.json", "zero.json", "huge.json"} <= {p.name for p in folder.iterdir()}


# -- images ------------------------------------------------------------------------------------


def whole_then_crop(image, size, method):
    """How every image was resized before thin ones were cropped first: whole, then the centre."""
    width, height = image.size
    scale = size / min(width, height)
    resized = (max(size, round(width * scale)), max(size, round(height * scale)))
    left, top = (resized[0] - size) // 2, (resized[1] - size) // 2
    return np.array(image.resize(resized, method).crop((left, top, left + size, top + size)))


@pytest.fixture
def bounded_resize(monkeypatch):
    """PIL resizes that would make an image larger than 64 outputs of 32 px fail (instead of
    taking the memory they ask for)."""
    from PIL import Image

    real = Image.Image.resize

    def resize(self, size, *args, **kwargs):
        assert size[0] * size[1] <= 64 * 32 * 32, f"resized whole to {size}"  # decoding.WHOLE_RESIZE_AREA
        return real(self, size, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", resize)


def test_a_thin_image_is_cropped_before_it_is_resized(tmp_path, bounded_resize):
    from PIL import Image

    from tlbench.decoding import to_rgb_uint8
    from tlbench_plugins.datasets import ImageFiles

    Image.new("L", (2, 500_000), 200).save(tmp_path / "thin.png")  # 2 KB; 32 × 8,000,000 resized whole
    Image.new("RGB", (500_000, 3), (9, 99, 199)).save(tmp_path / "wide.png")
    assert (to_rgb_uint8(ImageFiles([tmp_path / "thin.png"])[0], 32) == 200).all()
    assert (to_rgb_uint8(ImageFiles([tmp_path / "wide.png"])[0], 32) == (9, 99, 199)).all()


def test_ordinary_images_resize_as_before_and_thin_ones_within_a_level():
    from PIL import Image

    from tlbench.decoding import Resample, to_rgb_uint8

    rng = np.random.default_rng(0)
    for width, height, size in ((500, 375, 64), (37, 300, 16), (8, 8, 32), (2000, 40, 32), (9, 1000, 16)):
        noise = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        # noise for ordinary images; thin ones smooth, as a photo is (noise differs by more)
        smooth = np.add.outer(np.arange(height), np.arange(width)) * 200 // (height + width)
        thin = max(width, height) > 64 * min(width, height)
        image = Image.fromarray(np.repeat(smooth[..., None], 3, 2).astype(np.uint8) if thin else noise)
        for name, method in (("bilinear", Image.BILINEAR), ("bicubic", Image.BICUBIC)):
            ours = to_rgb_uint8(image, size, Resample(name, name)).astype(int)
            before = whole_then_crop(image, size, method).astype(int)
            assert np.abs(ours - before).max() <= (1 if thin else 0), (width, height, name)


def test_a_decompression_bomb_names_its_file(tmp_path, monkeypatch):
    from PIL import Image

    import tlbench
    from tlbench_plugins.datasets import ImageFiles

    Image.new("L", (100, 100)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 10,000 pixels: over twice the limit
    with pytest.raises(tlbench.ConfigError, match=r"Cannot read image .*bomb\.png: .*decompression bomb"):
        ImageFiles([tmp_path / "bomb.png"])[0]


def test_a_fifo_under_a_claims_name_stops_the_run_with_one_line(write_grid, tiny_settings, registry, tmp_path, cli):
    import os

    from tlbench.grid import load_grid

    grid = write_grid(f"""
        name = "g"
        backbones = ["test_efficientnet"]
        strategies = ["linear_probe"]
        datasets = ["digits"]
        {tiny_settings}
    """)
    (cell,) = load_grid(str(grid), registry).cells
    folder = tmp_path / "r" / "g" / "records"
    folder.mkdir(parents=True)
    os.mkfifo(folder / f"{cell.run_id}.lock")
    code, out, err = cli("run", "--grid", grid, "--results", tmp_path / "r", "-q")
    assert code == 1 and "Traceback" not in err, err
    (line,) = err.strip().splitlines()
    assert line.startswith("error: Cannot claim") and f"{cell.run_id}.lock is not a regular file" in line
