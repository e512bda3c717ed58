"""A file whose first MB is ASCII (UTF-8 to the encoding sniff) and whose last row holds its only non-ASCII bytes,
which are not UTF-8 (connectors.file_encoding.cut_or_8bit): a cp1251 export of Latin codes whose last cell is
Cyrillic. Before, only a last letter that is one byte starting a UTF-8 character was decided; a last row ending
in two such letters (``ДД``), in a pair that is UTF-8 (``Рё`` is UTF-8 ``и``) then a started character, in
``х``–``я`` (0xF5–0xFF: never UTF-8), or followed by a line break, stopped with the encoding error (exit 2)
though the file was complete. Now a row no bytes appended could make UTF-8 is read as the 8-bit file it is at
once; one that may be a UTF-8 file cut short waits until unchanged for SETTLED_SECONDS (ages: the decision's clock
set ahead, nothing waits)."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from connectors.errors import BadFileError, TransientError
from connectors.file_copying import QUIET_SECONDS
from connectors.file_encoding import SETTLED_SECONDS, utf8_copy
from tests.builders import run_cli
from tests.profiles import examples
from tests.test_files_cut_or_8bit import AHEAD, CUT, HEAD, clock_ahead, customers, export, row  # noqa: F401

#: rows enough to put the last one past the encoding sniff's first MB
BIG = HEAD + "".join(row(i, f"c{i % 97}") + "\n" for i in range(1, 40_000))
SMALL = HEAD + "".join(row(i, f"c{i}") + "\n" for i in range(1, 4))
RUSSIAN = "".join(map(chr, range(0x410, 0x450))) + "Ёё"


@pytest.mark.parametrize("body", [SMALL, BIG], ids=["small", "big"])
@pytest.mark.parametrize("last", ["A-ДД", "РёД", "Кузя", "я", "Иван Петров", "Иванов\n"])
def test_a_cp1251_file_ascii_but_for_its_last_row_is_read_as_cp1251(tmp_path, body, last, caplog):
    text = body + row(40_000, last)
    day = export(tmp_path, text.encode("cp1251"), age=SETTLED_SECONDS + 5)
    with caplog.at_level(logging.WARNING):
        got = customers(tmp_path)
    assert got[-1] == last.rstrip("\r\n") and len(got) == text.count("\n") + (not text.endswith("\n")) - 1
    if body is BIG:  # a small file is cp1251 to the sniff: no word
        assert f"{day}: ASCII text but for its last row's byte(s) (" in caplog.text and "read as cp1251" in caplog.text
    run_cli("check", "--config", str(tmp_path / "rfmsync.toml"))


@pytest.mark.parametrize("last", ["A-ДД", "Кузя", "Иванов\n"])
def test_a_last_row_no_bytes_appended_could_make_utf8_is_read_fresh(tmp_path, last):
    """Not a UTF-8 file cut short whatever follows: no hour to wait for (a minute, ``quiet_seconds``, without a
    final line break: test_files_copy_pause)."""
    export(tmp_path, (BIG + row(40_000, last)).encode("cp1251"), age=QUIET_SECONDS)
    assert customers(tmp_path)[-1] == last.rstrip("\n")


def test_a_last_row_utf8_but_for_a_started_character_waits_while_fresh(tmp_path):
    """cp1251 ``РёД`` is UTF-8 ``и`` and the first byte of a character: a UTF-8 file cut short, for all its
    bytes tell, until it has not changed for an hour."""
    day = export(tmp_path, (BIG + row(40_000, "РёД")).encode("cp1251"), age=SETTLED_SECONDS - 60)
    assert f"{day}: {CUT}" in run_cli("check", "--config", str(tmp_path / "rfmsync.toml"), code=3).output


def test_utf8_text_before_a_last_row_that_is_not_utf8_is_still_the_encoding_error(tmp_path):
    """Non-ASCII UTF-8 text in an earlier row and a cp1251 last row: a file of two encodings, not an 8-bit one."""
    data = (HEAD + row(1, "Пётр") + "\n").encode() + (BIG[len(HEAD):] + row(40_000, "Кузя")).encode("cp1251")
    day = export(tmp_path, data, age=SETTLED_SECONDS + 5)
    out = run_cli("check", "--config", str(tmp_path / "rfmsync.toml"), code=2).output
    assert f"{day}: not valid utf-8 text at byte {len(data) - 4} (line 40002: " in out


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("rows")


def _write(folder: Path, data: bytes, age: float) -> Path:
    """``day.csv`` in ``folder`` holding ``data``, last changed ``age`` seconds ago (the clock set ahead)."""
    path = folder / "day.csv"
    path.write_bytes(data)
    AHEAD[0] = age
    return path


#: the clock fixture installs a clock each example sets (AHEAD) through _write: nothing carries over
EXAMPLES = settings(max_examples=examples(240), deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@EXAMPLES
@given(big=st.booleans(), cell=st.text(alphabet=RUSSIAN + " -.0123456789abc", min_size=1, max_size=12),
       end=st.sampled_from(["", "\n", "\r\n"]))
def test_any_cp1251_last_row_of_a_file_unchanged_for_an_hour_is_read_right(folder, big, cell, end):
    """Any last cell of Russian letters, digits and Latin, with or without a line break after it. A cp1251 file
    whose bytes are all UTF-8 (``Рё`` alone is UTF-8 ``и``) is read as UTF-8: nothing can tell it."""
    text = (BIG if big else SMALL) + row(40_000, cell) + end
    data = text.encode("cp1251")
    try:
        data.decode("utf-8")
        assume(False)
    except UnicodeDecodeError:
        pass
    path = _write(folder, data, SETTLED_SECONDS + 5)
    if _utf8_words_before_a_started_character(data[max(data.rfind(b"\n", 0, len(data) - len(end)),
                                                       data.rfind(b"\r", 0, len(data) - len(end))) + 1:]):
        with pytest.raises(BadFileError, match="it was cut short"):  # cp1251 ``РёРёД``: UTF-8 ``ии`` cut short
            utf8_copy(path, "auto", folder)
        return
    out = utf8_copy(path, "auto", folder)
    assert out.read_bytes().decode("utf-8") == text


def _utf8_words_before_a_started_character(row: bytes) -> bool:
    """Whether ``row`` is UTF-8 but for a character begun at its end and reads before it as two Cyrillic letters
    in a run or another non-ASCII character: what a UTF-8 row cut short does, and a cp1251 row seldom."""
    try:
        row.decode("utf-8")
        return False
    except UnicodeDecodeError as e:
        if e.reason != "unexpected end of data":
            return False
    return bool(re.search(r"[\u0400-\u04ff]{2}|[^\x00-\x7f\u0400-\u04ff]", row.decode("utf-8", "ignore")))


@EXAMPLES
@given(big=st.booleans(), cell=st.text(alphabet=RUSSIAN + "ёЖ€😀 -.0123456789abc", min_size=1, max_size=12),
       earlier=st.text(alphabet="Пётрabc €😀", max_size=4), data=st.data())
def test_utf8_text_cut_inside_a_character_while_fresh_is_retried_later(folder, big, cell, earlier, data):
    """UTF-8 text (non-ASCII in earlier rows or not) cut inside any character of its last row, modified 30 s ago:
    a copy under way, for all its bytes tell."""
    text = (BIG if big else SMALL) + row(39_999, earlier) + "\n" + row(40_000, cell)
    raw = text.encode()
    inside = [i for i in range(len(raw) - 60, len(raw)) if 0x80 <= raw[i] <= 0xBF]  # cuts inside a character
    if not inside:
        return
    path = _write(folder, raw[:data.draw(st.sampled_from(inside))], 30)
    with pytest.raises(TransientError, match="the file ends inside a character"):
        utf8_copy(path, "auto", folder)


def test_a_utf8_file_ascii_but_for_its_last_row_cut_inside_a_word_is_cut_short_not_cp1251(tmp_path):
    """``Анна Смир`` and the first byte of ``н``, an hour old: before, read as cp1251 (``РђРЅРЅР° РЎРјРёС``)."""
    data = (SMALL + row(50, "Анна Смирнова")).encode()
    data = data[:data.rindex("рнова".encode()) + 1]
    day = export(tmp_path, data, age=SETTLED_SECONDS + 5)
    out = run_cli("check", "--config", str(tmp_path / "rfmsync.toml"), code=3).output
    assert f"{day}: the file ends inside a character at byte {len(data) - 1} (line 5: " in out
    assert "it was cut short" in out and "РђРЅРЅР°" not in out


@EXAMPLES
@given(big=st.booleans(), word=st.one_of(st.text(alphabet=RUSSIAN, min_size=2, max_size=6), st.sampled_from("é€😀")),
       rest=st.text(alphabet=RUSSIAN + "ёЖ€😀 -.0123456789abc", min_size=1, max_size=12), data=st.data())
def test_utf8_text_cut_after_a_utf8_word_an_hour_old_is_an_error_never_cp1251(folder, big, word, rest, data):
    """A last row ASCII but for UTF-8 text (two Cyrillic letters in a run, or another non-ASCII character) cut
    inside any character after that text, unchanged for an hour: the cut-short error (the right text cannot be
    had), never the row read as cp1251."""
    text = (BIG if big else SMALL) + row(40_000, word + rest)
    raw = text.encode()
    after = len(raw) - len((word + rest).encode()) + len(word.encode())
    inside = [i for i in range(after, len(raw)) if 0x80 <= raw[i] <= 0xBF]  # cuts inside a character
    if not inside:
        return
    path = _write(folder, raw[:data.draw(st.sampled_from(inside))], SETTLED_SECONDS + 5)
    with pytest.raises(BadFileError, match="it was cut short"):
        utf8_copy(path, "auto", folder)


@pytest.mark.parametrize("earlier", ["Я", "Иван Петров"])
def test_a_cr_only_utf8_file_cut_inside_its_last_character_an_hour_old_is_cut_short_not_cp1251(tmp_path, earlier):
    """Rows ended by CR alone (classic Mac), Cyrillic on every row (one-letter names: no UTF-8 word in the file's
    text), the last cut inside the letter after ``Ю``: before, the whole file was its "last row", nothing ASCII
    before it, and the file was stored as cp1251 mojibake."""
    text = "\r".join([HEAD.rstrip("\n")] + [row(i, earlier) for i in range(1, 50)] + [row(50, "ЮД")])
    data = text.encode()[:-1]
    day = export(tmp_path, data, age=SETTLED_SECONDS + 5)
    out = run_cli("check", "--config", str(tmp_path / "rfmsync.toml"), code=3).output
    assert f"{day}: the file ends inside a character at byte {len(data) - 1}" in out and "it was cut short" in out


@pytest.mark.parametrize("after", [";;\n", ",,,\n,,,\n", ",,,\n\n"])
def test_a_cp1251_last_data_row_before_excels_delimiter_only_rows_is_read_as_cp1251(tmp_path, after):
    """Excel ends a cp1251 export with a row of delimiters: before, that row was the "last row", the bad bytes came
    before it, and a complete file stopped with the encoding error (exit 2)."""
    text = BIG + row(40_000, "Кузя") + "\n" + after
    export(tmp_path, text.encode("cp1251"))
    assert customers(tmp_path)[-1] == "Кузя"
    run_cli("check", "--config", str(tmp_path / "rfmsync.toml"))


@pytest.mark.parametrize("cell", ["Петр", "Пётр", "ООО", "Ася", "Київ", "Юг", "АО", "ОАО", "Вит", "Три", "Хуст",
                                  "Ушиця", "ключ", "луч", "рила", "ул. Ленина", "пуля", "Люти", "Уют", "Сыр", "лют",
                                  "Сёстры", "Дуэт", "Вол"])
def test_a_short_cp866_last_cell_is_read_as_cp866(tmp_path, cell):
    """A cp866 export of Latin codes whose last cell is a short Cyrillic word: before, its bytes read as as many
    cp1251 letters (``Петр`` as ``ЏҐва``, ``ООО`` as ``ЋЋЋ``: Serbian letters where cp866 has its capitals) and the
    tie made it cp1251 mojibake, silently but for the bytes in hex. cp866 capitals and л are cp1251 punctuation
    (``Т`` is ’, ``л`` «): a capital starting a word (``Три``), or ``л`` after a small letter (``ул.``), stays a
    letter."""
    export(tmp_path, (SMALL + row(40_000, cell) + "\n").encode("cp866"), age=SETTLED_SECONDS + 5)
    assert customers(tmp_path)[-1] == cell


@pytest.mark.parametrize("names, encoding", [
    (["Ђорђе Јовановић", "Љиљана Петровић", "Милош Ђурић"], "cp1251"),  # Serbian: cp1251 has Ђ Љ Ћ Ј, cp866 not
    (["Іван Петренко", "Їжак Ґудзь", "Євген Коваль"], "cp1251"),
    (["Иван Петров", "Пётр Сидоров", "ООО Ромашка"], "cp1251"),
    (["Иван Петров", "Пётр Сидоров", "ООО Ромашка"], "cp866"),
])
def test_a_whole_cyrillic_export_is_read_in_its_encoding(tmp_path, names, encoding):
    """Every row's customer a Cyrillic name. Before, a cp1251 export of Serbian names read as cp866 (their letters
    Ђ Љ Ћ Ј were not counted as letters, and cp866 read the rest as as many), silently."""
    text = HEAD + "".join(row(i, names[i % len(names)]) + "\n" for i in range(1, 2001))
    export(tmp_path, text.encode(encoding))
    assert customers(tmp_path) == [names[i % len(names)] for i in range(1, 2001)]


@pytest.mark.parametrize("cell, other", [("мама", "ьрьр"), ("ёлка", "╕ыър"), ("Ёлка", "иыър"), ("окно", "юъэю"),
                                         ("аб", "рс"), ("благ", "сыру")])
def test_a_cp1251_last_cell_as_many_letters_in_cp866_stays_cp1251(tmp_path, cell, other, caplog):
    """cp1251 lowercase а–п are cp866 р–я: as many letters either way, all Russian (``аб`` is ``рс``): cp1251, and
    the warning shows both readings (a guess, not silent). Before, the reading of the letters more frequent in
    Russian won, and short cells of а–п letters (``аб``, ``благ``) were cp866 mojibake."""
    data = (BIG + row(40_000, cell) + "\n").encode("cp1251")
    day = export(tmp_path, data)
    with caplog.at_level(logging.WARNING):
        assert customers(tmp_path)[-1] == cell
    if other.isalpha():
        assert (f"{day}: ASCII text but for its last row's byte(s) ({cell.encode('cp1251').hex(' ')}), which are not "
                f"UTF-8: read as cp1251 (line 40001: '{row(40_000, cell)}'); as cp866 it reads '{row(40_000, other)}' "
                f"(as many letters): a guess (set [source] encoding to say which)") in caplog.text


@pytest.mark.parametrize("cell", ["«оплачен»", "„хлеб“", "ООО «вода»", "«чай»", "“сок”", "‘сок’", "‹чай›", "сок…",
                                  "хлеб—молоко", "хлеб–молоко", "Иван Петров (звонить…)", "ждём…", "“сок„", "«сок",
                                  "„сок", "ООО «Сок", "(«сок)"])
def test_a_cp1251_last_cell_of_a_word_by_punctuation_is_read_as_cp1251(tmp_path, cell):
    """cp1251 «, „, “, ”, ‘, ’, ‹, ›, …, — and – are cp866 letters (л, Д, У, Ф, С, Т, Л, Ы, Е, Ч, Ц): before, a quoted
    word (``«оплачен»`` as ``люяырўхэ╗``), and until now one before ``…`` or a dash (``сок…`` as ``ёюъЕ``), read as
    one more letter in cp866 and the cell was cp866 mojibake. Punctuation at a word's edge counts as no letter; until
    now an opening quote with no closing one (``«сок``: cp866 ``лёюъ``) did not, when cp866 reads it as starting no
    Russian word."""
    export(tmp_path, (BIG + row(40_000, cell) + "\n").encode("cp1251"))
    assert customers(tmp_path)[-1] == cell


@pytest.mark.parametrize("cell, other", [("бања", "срЬр"), ("пећ", "яхЮ"), ("Љубав", "Кєсрт"), ("ђак", "Рръ"),
                                         ("Џон", "Пюэ"), ("њива", "Ьштр"), ("Ђорђе", "АюЁРх"), ("Ўзбек", "бчсхъ")])
def test_a_short_serbian_cp1251_cell_is_read_as_cp1251_with_both_readings_shown(tmp_path, cell, other, caplog):
    """A lone short cell of another Cyrillic alphabet's word: before, ``бања`` was cp866 ``срЬр`` (as many letters,
    and only cp1251's ``њ`` outside the Russian alphabet), silently but for the warning. Now a letter of a plausible
    word of another alphabet counts half, and cp866's reading is no Russian word (a capital after a small letter,
    ъ ending a word, ``юэ``). Still a tie of letters: the warning shows both readings."""
    data = (BIG + row(40_000, cell) + "\n").encode("cp1251")
    export(tmp_path, data)
    with caplog.at_level(logging.WARNING):
        assert customers(tmp_path)[-1] == cell
    assert f"read as cp1251 (line 40001: '{row(40_000, cell)}'); as cp866 it reads '{row(40_000, other)}'" in caplog.text


@pytest.mark.parametrize("cell, other", [("аб", "рс"), ("благ", "сыру"), ("мама", "ьрьр")])
def test_a_small_cp1251_file_tied_is_read_as_cp1251_with_a_warning(tmp_path, cell, other, caplog):
    """The whole file within the encoding sniff's first MB, its only Cyrillic a tie: cp1251, and the warning shows
    both readings, as the last row's does. Before, nothing was logged."""
    day = export(tmp_path, (SMALL + row(4, cell) + "\n").encode("cp1251"))
    with caplog.at_level(logging.WARNING):
        assert customers(tmp_path)[-1] == cell
    assert (f"{day}: not UTF-8, and as many letters in Cyrillic words as cp1251 and as cp866: read as cp1251 (line 5: "
            f"'{row(4, cell)}'); as cp866 it reads '{row(4, other)}' (as many letters): a guess") in caplog.text


def _guessed_export(tmp_path):
    """An export whose encoding is a guess (a cp1251/cp866 tie), the guess's line, and the ``segments`` command."""
    day = export(tmp_path, (SMALL + row(4, "мама") + "\n").encode("cp1251"))
    guess = (f"{day}: not UTF-8, and as many letters in Cyrillic words as cp1251 and as cp866: read as cp1251 "
             f"(line 5: '{row(4, 'мама')}'); as cp866 it reads '{row(4, 'ьрьр')}' (as many letters): a guess "
             "(set [source] encoding to say which)")
    return day, guess, ("segments", "--config", str(tmp_path / "rfmsync.toml"), "--as-of", "2025-07-01")


def test_an_encoding_guess_is_said_by_the_run_that_reads_the_file(tmp_path):
    """The cold run says the guess once, with the staging's other warnings."""
    _, guess, segments = _guessed_export(tmp_path)
    assert run_cli(*segments).output.count(guess) == 1


def test_an_encoding_guess_is_said_by_every_run_that_reads_the_files_rows_warm_ones_too(tmp_path):
    """The guess was logged by the run that read the file only: a warm run (the rows from the order store), or one
    that read another file added beside it, said nothing, and the export was still read on a guess. Now every run
    says it, with the staging's other warnings (JSON ``warnings`` too); the guess is made once, at the read. (The
    cold run is the test above: here its output is not looked at, so the warm runs' asserts come first.)"""
    import json

    day, guess, segments = _guessed_export(tmp_path)
    run_cli(*segments)  # the cold run (exit 0): the file read and stored
    warnings = json.loads(run_cli(*segments, "--format", "json").stdout)["warnings"]  # warm: the store's rows
    assert [w for w in warnings if w.startswith(f"{day}: not UTF-8")] == [guess]
    assert run_cli(*segments).output.count(guess) == 1  # warm, as text
    (tmp_path / "exports" / "more.csv").write_text(SMALL.replace("c1", "d1"), encoding="utf-8")
    assert run_cli(*segments).output.count(guess) == 1  # another file read, day.csv's rows from the store
