"""scrypt password hashes of the built-in authenticator."""

from __future__ import annotations

import pytest

from provider.auth.local import MIN_PASSWORD_LENGTH, ScryptHasher, UserError, check_new_password

FAST = ScryptHasher(log_n=10)


def test_a_hash_verifies_only_its_password() -> None:
    encoded = FAST.hash("correct horse")
    assert encoded.startswith("$scrypt$ln=10,r=8,p=1$")
    assert "correct horse" not in encoded
    assert FAST.verify("correct horse", encoded)
    assert not FAST.verify("correct horsf", encoded)
    assert not FAST.verify("", encoded)


def test_hashes_are_salted() -> None:
    assert FAST.hash("same password") != FAST.hash("same password")


def test_non_ascii_passwords() -> None:
    encoded = FAST.hash("Pässwörd-ü-3")
    assert FAST.verify("Pässwörd-ü-3", encoded)
    assert not FAST.verify("Passwort-u-3", encoded)


@pytest.mark.parametrize(
    "encoded", ["", "plain", "$scrypt$ln=99,r=8,p=1$AAAA$AAAA", "$argon2id$v=19$m=1,t=1,p=1$x$y"]
)
def test_malformed_or_unsafe_hashes_never_verify(encoded: str) -> None:
    assert not FAST.verify("anything", encoded)


def test_parameters_are_read_from_the_hash() -> None:
    old = ScryptHasher(log_n=10).hash("password1")
    stronger = ScryptHasher(log_n=11)
    assert stronger.verify("password1", old)
    assert stronger.needs_rehash(old)
    assert not stronger.needs_rehash(stronger.hash("password1"))


@pytest.mark.parametrize("password", ["", "   ", "short", "x" * 2000])
def test_weak_new_passwords_are_refused(password: str) -> None:
    with pytest.raises(UserError):
        check_new_password(password)


def test_a_reasonable_password_is_accepted() -> None:
    check_new_password("x" * MIN_PASSWORD_LENGTH)
