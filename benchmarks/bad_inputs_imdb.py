"""The bad-input catalogue's IMDB cases: a label,text,is_valid CSV and aclImdb's review files."""

from __future__ import annotations

from pathlib import Path

from bad_inputs_cases import at, edit_csv, on, replace_bytes, set_cell
from bad_inputs_layouts import imdb_acl, imdb_csv, latin1, zero

CSV = "texts.csv"


def valid_in_train(rows: list) -> None:
    for r in [r for r in rows[1:] if r[2] == "True"][:3]:
        rows.append([r[0], r[1], "False"])


def unbalanced_quote(path: Path) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write('positive,"never closed,False\n')


def one_review_everywhere(root: Path) -> None:
    text = (root / "train/pos/0_7.txt").read_text()
    for k in range(6):
        (root / f"train/pos/{k}_7.txt").write_text(text)


add = on("imdb", "imdb", lambda tmp: imdb_csv(tmp / "imdb"))
add("validation reviews duplicated in train", edit_csv(CSV, valid_in_train), CSV, expect="train", probe=None)
add("non-UTF-8 texts.csv", replace_bytes(CSV, b"Review 3", b"R\xe9view 3"), CSV)
add("unknown label", edit_csv(CSV, set_cell(3, 0, "meh")), CSV)
add("empty text", edit_csv(CSV, set_cell(3, 1, "  <br />  ")), CSV)
add("missing text column", edit_csv(CSV, lambda rows: rows.__setitem__(0, ["label", "review", "is_valid"])), CSV)
add("is_valid not a boolean", edit_csv(CSV, set_cell(3, 2, "maybe")), CSV)
add("no validation rows", edit_csv(CSV, lambda rows: [r.__setitem__(2, "False") for r in rows[1:]]), "valid")
add("zero-byte texts.csv", at(CSV, zero), CSV)
add("unbalanced quote in texts.csv", at(CSV, unbalanced_quote), CSV)

add = on("imdb acl", "imdb", lambda tmp: imdb_acl(tmp / "acl"))
add("non-UTF-8 review file", at("train/pos/3_7.txt", latin1, "Caf\xe9 of a film."), "3_7.txt")
add("empty review file", at("train/neg/2_2.txt", zero), "2_2.txt")
add("the same review in several train files", one_review_everywhere, "0_7.txt", expect="train")
del add
