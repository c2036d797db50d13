"""Long and Unicode passwords through the whole stack."""

from __future__ import annotations

import unicodedata

from tests.helpers import login, new_client, register


def test_passwords_past_72_bytes_differ_in_their_tail(client, app):
    base = "a" * 80
    assert register(client, password=base + "1").status_code == 303
    assert login(new_client(app), "alice", base + "2").status_code == 401
    assert login(new_client(app), "alice", base + "1").status_code == 303


def test_the_longest_password_works_and_one_more_is_422(client, app):
    # Two characters taking turns: one repeated character is an easy-to-guess password.
    longest = "éa" * 512
    assert register(client, password=longest).status_code == 303
    assert login(new_client(app), "alice", longest).status_code == 303
    assert register(new_client(app), "bob", "bob@example.com", longest + "é").status_code == 422


def test_nfc_and_nfd_are_the_same_password(client, app):
    composed = unicodedata.normalize("NFC", "crème brûlée!")
    decomposed = unicodedata.normalize("NFD", composed)
    assert register(client, password=decomposed).status_code == 303
    assert login(new_client(app), "alice", composed).status_code == 303


def test_the_original_six_character_minimum_is_no_longer_enough(client):
    response = register(client, password="abc123")
    assert response.status_code == 422
    assert "at least 8 characters" in response.text
