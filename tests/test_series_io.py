import pytest

from opentslm_hub.series_io import read_series_csv


def write(tmp_path, text):
    path = tmp_path / "series.csv"
    path.write_text(text)
    return path


def test_plain_column_and_header_with_dates(tmp_path):
    assert read_series_csv(write(tmp_path, "\n1\n2.5\n-3e2\n\n")) == [1.0, 2.5, -300.0]
    path = write(tmp_path, "date,value,other\n2020-01,1,9\n2020-02,2,8\n")
    assert read_series_csv(path) == [9.0, 8.0]
    assert read_series_csv(path, "value") == [1.0, 2.0]
    assert read_series_csv(path, 1) == [1.0, 2.0]


@pytest.mark.parametrize(
    ("text", "column", "message"),
    [
        ("", None, "empty"),
        ("value\n", None, "header but no data"),
        ("1\n2\nabc\n", None, r"line 3: 'abc' is not a number"),
        ("1\n\n2\n", None, r"line 2 is empty"),
        ("1\n,\n2\n", None, r"line 2: 2 cells, expected 1"),
        ("a,b\n1,\n", "b", r"line 2: '' is not a number"),
        ("1\nnan\n", None, "line 2: non-finite"),
        ("a,b\n1,2\n3\n", None, "line 3: 1 cells, expected 2"),
        ("a,b\n1,2\n", "c", r"Column 'c' not found"),
        ("a,b\n1,2\n", 5, "out of range"),
    ],
)
def test_malformed_csv(tmp_path, text, column, message):
    with pytest.raises(ValueError, match=message):
        read_series_csv(write(tmp_path, text), column)


def test_missing_file(tmp_path):
    with pytest.raises(ValueError, match="Cannot read CSV file"):
        read_series_csv(tmp_path / "nope.csv")
