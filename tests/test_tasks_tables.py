"""Table files for training data and `modernenc predict`: every format gives the same rows, and each
kind of bad file gets an error naming the file, the line and what it holds."""

import json
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from modernenc.utils.tables import DataColumnError, read_rows

ROWS = [{"text": "aspirin, then a rash", "label": "1"}, {"text": 'no events, "quoted"', "label": "0"}]


def test_jsonl_csv_and_parquet_give_the_same_rows(tmp_path):
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in ROWS) + "\n\n")
    (tmp_path / "a.csv").write_text('\ufefftext,label\n"aspirin, then a rash",1\n"no events, ""quoted""",0\n')
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "a.parquet")
    for name in ("a.jsonl", "a.csv", "a.parquet"):
        assert read_rows(tmp_path / name, ["text", "label"]) == ROWS, name


def test_bad_files_name_the_line_and_the_columns(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"text": "a"}\n{"text": "b"\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2 is not valid JSON"):
        read_rows(tmp_path / "bad.jsonl", ["text"])
    (tmp_path / "list.jsonl").write_text('["a"]\n')
    with pytest.raises(ValueError, match=r"list.jsonl:1 must be a JSON object"):
        read_rows(tmp_path / "list.jsonl", ["text"])
    (tmp_path / "ragged.jsonl").write_text('{"text": "a"}\n{"body": "b", "id": 2}\n')
    with pytest.raises(
        DataColumnError, match=r"ragged.jsonl:2 has no column 'text'; its columns are: 'body', 'id'"
    ):
        read_rows(tmp_path / "ragged.jsonl", ["text"])
    (tmp_path / "wide.csv").write_text("text\na\nb,c\n")
    with pytest.raises(ValueError, match=r"wide.csv:3 has more fields than the header's 1"):
        read_rows(tmp_path / "wide.csv", ["text"])
    pq.write_table(pa.Table.from_pylist([{"body": "a"}]), tmp_path / "t.parquet")
    with pytest.raises(DataColumnError, match=r"has no column 'text'; its columns are: 'body' \(hint\)"):
        read_rows(tmp_path / "t.parquet", ["text"], hint=" (hint)")
    with pytest.raises(FileNotFoundError, match="missing.csv does not exist"):
        read_rows(tmp_path / "missing.csv")
    with pytest.raises(ValueError, match=r"supported formats are \.jsonl, \.json, \.csv, \.parquet"):
        read_rows(tmp_path / "a.tsv")


def test_jsonl_lines_split_on_newline_only_and_a_bom_is_dropped(tmp_path):
    """U+2028, U+0085 and form feeds may stand raw inside JSON strings; only "\\n" or "\\r\\n" ends a row."""
    texts = ["before\u2028after", "page\x0cbreak", "next\x85line", "plain"]
    body = "\r\n".join(json.dumps({"text": t}, ensure_ascii=False) for t in texts) + "\n"
    (tmp_path / "a.jsonl").write_text(body, encoding="utf-8", newline="")
    assert [r["text"] for r in read_rows(tmp_path / "a.jsonl", ["text"])] == texts
    (tmp_path / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + body.encode())  # as Notepad writes it
    assert [r["text"] for r in read_rows(tmp_path / "bom.jsonl", ["text"])] == texts
    (tmp_path / "bad.jsonl").write_text(body + "{oops\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.jsonl:5 is not valid JSON"):  # line 5 of the file
        read_rows(tmp_path / "bad.jsonl", ["text"])


@pytest.mark.parametrize(
    "name, data, line, column",
    [
        ("a.jsonl", b'{"text": "fine"}\n{"text": "caf\xe9"}\n', 2, 14),
        ("a.csv", b"text,label\nfine,0\ncaf\xe9,1\n", 3, 4),
    ],
)
def test_non_utf8_input_names_the_file_the_line_and_the_fix(tmp_path, name, data, line, column):
    """Every table reader decodes through one place; codec errors name no file and count bytes, not lines."""
    from modernenc.utils.tables import read_lines

    (tmp_path / name).write_bytes(data)
    expected = (
        rf"{name}:{line} is not UTF-8 \(byte 0xe9 at column {column}\); save the file as UTF-8, e.g. iconv"
    )
    with pytest.raises(ValueError, match=expected):
        read_rows(tmp_path / name, ["text"])
    with pytest.raises(ValueError, match=expected):  # and the plain line reader (predict's .txt, corpora)
        read_lines(tmp_path / name)


def test_a_csv_quote_never_closed_fails_rather_than_swallowing_the_rows_after_it(tmp_path):
    """Python's csv reader, unless strict, reads an unclosed quote to the end of the file: four rows in, one
    text out, and the three rows inside it never classified on their own."""
    body = 'id,text\n1,fine\n\n2,"Rash after amoxicillin\n3,Nausea from codeine\n4,Headache\n'
    (tmp_path / "open.csv").write_text(body)
    with pytest.raises(
        ValueError, match=r"open\.csv:4 is not valid CSV \(a quoted field in it is never closed\)"
    ):
        read_rows(tmp_path / "open.csv", ["text"])  # line 4: where that row starts (line 3 is blank)
    (tmp_path / "after.csv").write_text('id,text\n1,"Rash" after amoxicillin\n')
    with pytest.raises(ValueError, match=r"after\.csv:2 is not valid CSV: ',' expected after '\"'"):
        read_rows(tmp_path / "after.csv", ["text"])  # not silently read as 'Rash after amoxicillin'
    # Quotes that are well-formed still span lines, and line numbers count the lines of the file.
    (tmp_path / "multi.csv").write_text('id,text\n1,"two\nlines"\n\n2,a,b\n')
    with pytest.raises(ValueError, match=r"multi\.csv:5 has more fields than the header's 2"):
        read_rows(tmp_path / "multi.csv", ["text"])
    (tmp_path / "quoted.csv").write_text('id,text\n1,"two\nlines, ""quoted"""\n2,said "ouch" today\n')
    assert [r["text"] for r in read_rows(tmp_path / "quoted.csv", ["text"])] == [
        'two\nlines, "quoted"',
        'said "ouch" today',
    ]


def test_a_csv_header_naming_a_column_twice_is_refused(tmp_path):
    """A row is a dict: the second 'text' column replaced the first, whose texts were never read."""
    (tmp_path / "twice.csv").write_text("id,text,text\n1,Rash after amoxicillin.,see notes\n")
    with pytest.raises(ValueError, match=r"twice\.csv:1 names more than one column 'text'; rename them"):
        read_rows(tmp_path / "twice.csv", ["text"])


@pytest.mark.parametrize(
    "body", ['[\n  {"text": "a"},\n  {"text": "b"}\n]\n', '[{"text": "a"}, {"text": "b"}]\n']
)
def test_a_json_array_is_named_as_one_with_the_conversion(tmp_path, body):
    """`.json` is read as JSON Lines; an array said 'line 1 is not valid JSON' or 'must be a JSON object'."""
    (tmp_path / "rows.json").write_text(body)
    with pytest.raises(ValueError, match=r"rows\.json holds a JSON array; rows are read as JSON Lines, one"):
        read_rows(tmp_path / "rows.json", ["text"])


@pytest.mark.parametrize(
    "encoding, name, expected",
    [
        ("utf-16", "rows.csv", r"rows\.csv is UTF-16 \(it starts with a UTF-16 byte-order mark\), not UTF-8"),
        ("utf-32", "rows.csv", r"rows\.csv is UTF-32 \(it starts with a UTF-32 byte-order mark\), not UTF-8"),
        ("utf-16-le", "rows.csv", r"rows\.csv:1 holds a NUL byte \(column 2\), which no text does: UTF-16"),
    ],
)
def test_utf16_is_named_not_sent_through_latin1(tmp_path, encoding, name, expected):
    """Excel's "Unicode text" is UTF-16: the advice for other bytes (iconv -f latin1) turned it into texts
    with a NUL between letters, and without a byte-order mark the NULs passed as UTF-8 themselves."""
    from modernenc.utils.tables import read_lines

    (tmp_path / name).write_bytes("text\r\nRash after amoxicillin.\r\n".encode(encoding))
    fix = rf"iconv -f {'utf-16le' if encoding == 'utf-16-le' else encoding} -t utf-8 {name} > rows-utf8.csv$"
    for read in (lambda path: read_rows(path, ["text"]), read_lines):
        with pytest.raises(ValueError, match=expected) as err:
            read(tmp_path / name)
        assert re.search(fix, str(err.value)), str(err.value)
    (tmp_path / name).write_bytes("text\r\nRash after amoxicillin.\r\n".encode("utf-8-sig"))  # converted
    assert read_rows(tmp_path / name, ["text"]) == [{"text": "Rash after amoxicillin."}]
