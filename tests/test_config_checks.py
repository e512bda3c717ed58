"""What ``rfmsync check`` said ok and ``sync`` refused or got wrong (hunt28b #5, #6, #7): refused when the config
loads (:mod:`sync.config_checks`), so ``check`` exits 2 with the same sentence."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.builders import config_error

HEAD = '[segmentation]\npreset = "tracks"\n'


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "rfmsync.toml"
    path.write_text(HEAD + body, encoding="utf-8")
    return path


@pytest.mark.parametrize("dest, message", [
    ('type = "sendgrid"\ntag_prefix = "rfm:"',
     "destination 'd': tag_prefix is for Mailchimp only: SendGrid ignores it"),
    ('type = "unisender"\ntag_prefix = "rfm:"', "destination 'd': tag_prefix is for Mailchimp only: Unisender"),
    ('type = "mailchimp"\naudience = "a1"\nlist_prefix = "RFM "',
     "destination 'd': list_prefix is for SendGrid only: Mailchimp ignores it"),
    ('type = "sendgrid"\n[destinations.fields]\nrfm_x = "segmnet"',
     "destination 'd': unknown field value(s) rfm_x = 'segmnet'; known values: segment, rfm,"),
])
def test_a_destination_key_sync_would_ignore_or_refuse_is_a_config_error(tmp_path, dest, message):
    """``tag_prefix`` on SendGrid was ignored: "Best active" went to the shop's own list ``VIP``, and
    ``--reconcile`` removed the shop's members from it; an unknown field value passed ``check`` and stopped
    ``sync`` at plan time."""
    path = write(tmp_path, f'[[destinations]]\nname = "d"\n{dest}\n[destinations.segments]\n"Best active" = "VIP"\n')
    error, out = config_error(path)
    assert error.startswith(f"{path}: ") and message in error
    assert message.split(":")[0] in out


def test_a_playbook_key_that_is_no_segment_is_a_config_error_with_did_you_mean(tmp_path):
    path = write(tmp_path, '[report.playbook]\n"Best activ" = "Call them"\n')
    error, out = config_error(path)
    assert ("[report.playbook] 'Best activ': unknown segment (did you mean 'Best active'?); the segments are Best "
            "active, Falling asleep, Churn, Beginners, Other") in error
    assert "did you mean 'Best active'" in out
