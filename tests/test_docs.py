"""The documentation: the README stays a front door, and every relative link leads somewhere."""

import re

import pytest

from helpers.commands import REPO_ROOT

DOCS = [REPO_ROOT / 'README.md', REPO_ROOT / 'BENCHMARKS.md',
        *sorted((REPO_ROOT / 'docs').glob('*.md'))]
LINK = re.compile(r'\]\(([^)#\s]+)(?:#[^)]*)?\)')


def test_the_readme_is_a_front_door():
  lines = (REPO_ROOT / 'README.md').read_text().splitlines()
  assert len(lines) <= 300, f'README.md has {len(lines)} lines; move details into docs/'


@pytest.mark.parametrize('document', DOCS, ids=lambda p: p.name)
def test_relative_links_lead_to_files(document):
  targets = [t for t in LINK.findall(document.read_text()) if '://' not in t
             and not t.startswith('mailto:')]
  missing = [t for t in targets if not (document.parent / t).exists()]
  assert missing == []
