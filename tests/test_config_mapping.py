"""Config mistakes in a destination's mapping are errors naming the file, the destination and the key, never a
plan: a segment name that no rule gives (a typo) would otherwise be an empty audience whose managed tag is taken
off everyone who has it."""

from __future__ import annotations

from pathlib import Path

import pytest

from sync.config import load_config
from sync.errors import ConfigError
from tests.builders import config_error, run_cli

SEGMENTS = "Best active, Falling asleep, Churn, Beginners, Other"


def config(tmp_path: Path, dest: str, rules: str = "") -> Path:
    path = tmp_path / "rfmsync.toml"
    path.write_text(f'[segmentation]\npreset = "tracks"\n{rules}\n[[destinations]]\nname = "mc"\n{dest}\n',
                    encoding="utf-8")
    return path


MC = 'type = "mailchimp"\naudience = "aud1"\n'
UNI = 'type = "unisender"\n'


@pytest.mark.parametrize("dest, message", [
    (MC + '[destinations.segments]\n"Best active" = "VIP"\n"Best activ" = "rfm-best"',
     "destination 'mc': [destinations.segments] 'Best activ': unknown segment (did you mean 'Best active'?); "
     f"the segments are {SEGMENTS}"),
    (MC + '[destinations.segments]\n"churn" = "Winback"',
     "[destinations.segments] 'churn': unknown segment (did you mean 'Churn'?)"),
    (UNI + '[destinations.segments]\n"Churn" = "lost"\n[destinations.tags]\n"Beginner" = "new"',
     "[destinations.tags] 'Beginner': unknown segment (did you mean 'Beginners'?)"),
    (MC + '[destinations.segments]\n"Churn" = "Winback "',
     "[destinations.segments] 'Churn': the tag name 'Winback ' is empty or has spaces around it"),
    (UNI + '[destinations.tags]\n"Churn" = ""', "[destinations.tags] 'Churn': the tag name '' is empty"),
])
def test_a_mapped_segment_no_rule_gives_is_a_config_error_naming_the_key(tmp_path, dest, message):
    path = config(tmp_path, dest)
    error, out = config_error(path)
    assert error.startswith(f"{path}: ")
    assert message in error
    assert message.split(":")[1] in out


def test_custom_rule_names_and_the_default_segment_may_be_mapped(tmp_path):
    rules = '[[segmentation.rules]]\nname = "Reorder due"\nmatch = ["R1"]'
    path = config(tmp_path, MC + '[destinations.segments]\n"Reorder due" = "rfm-reorder"\n"Other" = "rfm-other"',
                  rules)
    assert load_config(path).destinations[0].segments == {"Reorder due": "rfm-reorder", "Other": "rfm-other"}


@pytest.mark.parametrize("dest", [MC, UNI, 'type = "sendgrid"\n'])
def test_two_fields_whose_names_differ_only_in_case_are_a_config_error(tmp_path, dest):
    """Mailchimp merge tags are upper case and SendGrid's field names match whatever the case: ``Recency`` and
    ``RECENCY`` are one ESP field, written twice per contact with two values while the ledger believes both.
    Refused for every type (Unisender's names would differ only in case too: a trap, never a need)."""
    path = config(tmp_path, dest + '[destinations.fields]\nRecency = "recency_days"\nSEG = "segment"\nRECENCY = "r"')
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert ("destination 'mc': [destinations.fields] 'Recency' and 'RECENCY' differ only in case, and Mailchimp "
            "and SendGrid take them for one field" in str(exc.value))


@pytest.mark.parametrize("segmentation, message", [
    ('preset = "none"', '[segmentation] preset = "none" needs [[segmentation.rules]]'),
    ("levels = 5", "[segmentation] preset 'tracks' is defined on 3 levels"),
])
def test_rules_that_cannot_be_built_are_a_config_error_naming_the_file_when_segments_are_mapped(
        tmp_path, segmentation, message):
    """Checking the mapped segment names builds the rules; a rule error there is the file's error (exit 2), as it
    is when no segment is mapped, not a raw exception out of pydantic."""
    path = tmp_path / "rfmsync.toml"
    path.write_text(f'[segmentation]\n{segmentation}\n[[destinations]]\nname = "mc"\n{MC}'
                    '[destinations.segments]\n"Churn" = "Winback"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert str(exc.value).startswith(f"{path}: ")
    assert message in str(exc.value)
    assert message in run_cli("check", "--config", str(path), code=2).output


SG = 'type = "sendgrid"\n'


@pytest.mark.parametrize("dest, message", [
    (MC + '[destinations.fields]\n"Recency score" = "recency_days"',
     "destination 'mc': [destinations.fields] 'Recency score': a Mailchimp merge tag is 1-10 characters, letters, "
     "digits or _ (e.g. RECENCY)"),
    (MC + '[destinations.fields]\nRECENCY_DAYS = "recency_days"', "[destinations.fields] 'RECENCY_DAYS': a Mailchimp"),
    (SG + '[destinations.fields]\n"1st_order" = "first_order"',
     "[destinations.fields] '1st_order': a SendGrid custom field name is letters, digits and _ only, starting "
     "with a letter or _"),
    (UNI + '[destinations.fields]\n"rfm segment" = "segment"',
     "[destinations.fields] 'rfm segment': a Unisender field name is Latin letters, digits, _ or -, starting "
     "with a letter"),
    (UNI + '[destinations.fields]\nEmail_Status = "segment"',
     "[destinations.fields] 'Email_Status': 'email_status' is a Unisender system field"),
    (MC + '[destinations.fields]\nSEG = "segmnt"',
     "[destinations.fields] SEG = 'segmnt': unknown value (did you mean 'segment'?); the values are "),
])
def test_a_field_the_esp_refuses_or_an_unknown_value_is_a_config_error_naming_the_key(tmp_path, dest, message):
    """kept28 #4: a field name the ESP refuses (a Mailchimp merge tag over 10 characters or with a space, a
    SendGrid or Unisender name with characters it does not take, a Unisender system field) loaded, planned and
    failed at apply (the destination's prepare); an unknown value failed at plan, without the file. Both are the
    config's errors now, at load and ``rfmsync check`` (exit 2), naming the file, the key and what is wrong."""
    path = config(tmp_path, dest)
    error, out = config_error(path)
    assert error.startswith(f"{path}: ") and message in error, error
    assert "fields" in out and "Traceback" not in out
