"""tests/support/chspec.py: without CH's spec, spec-dependent tests are skipped on a plain clone,
and fail with CI=true or where ../shared exists."""
import pytest

from tests.support import chspec

MISSING = 'no-such-spec-v0.yaml'


@pytest.fixture
def clone(tmp_path, monkeypatch):
    """A checkout at tmp_path/work/repo, with nothing beside it; CI unset."""
    repo = tmp_path / 'work' / 'repo'
    repo.mkdir(parents=True)
    monkeypatch.setattr(chspec, 'REPO', str(repo))
    monkeypatch.delenv('CI', raising=False)
    return repo


def test_plain_clone_skips_naming_the_file(clone):
    with pytest.raises(pytest.skip.Exception) as info:
        chspec.schemas(MISSING)
    assert 'shared/ch-api/%s not found' % MISSING in str(info.value)


def test_ci_fails_instead_of_skipping(clone, monkeypatch):
    monkeypatch.setenv('CI', 'true')
    with pytest.raises(pytest.fail.Exception) as info:
        chspec.schemas(MISSING)
    assert MISSING in str(info.value) and 'CI=true' in str(info.value)


def test_shared_beside_the_checkout_fails_instead_of_skipping(clone):
    (clone.parent / 'shared').mkdir()
    with pytest.raises(pytest.fail.Exception):
        chspec.schemas(MISSING)


def test_unreadable_spec_fails_where_required(clone, monkeypatch, tmp_path):
    bad = tmp_path / 'bad.yaml'
    bad.write_text('components: [not, a, mapping\n')
    monkeypatch.setattr(chspec, 'find', lambda name: str(bad))
    (clone.parent / 'shared').mkdir()
    with pytest.raises(pytest.fail.Exception) as info:
        chspec.schemas(MISSING)
    assert str(bad) in str(info.value)
