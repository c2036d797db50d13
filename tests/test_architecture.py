"""The layout's promises: the domain knows nothing of HTTP, and the README's layout table
names the one module that answers each "where is X?" question."""

from __future__ import annotations

import ast

import pytest

from tests.helpers import ROOT

DOMAIN = ROOT / "webapp" / "domain"


def _imports(path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_the_domain_checker_sees_imports():
    # The control: the web layer does import Starlette, and the walk finds it.
    assert any(name.startswith("starlette") for name in _imports(ROOT / "webapp/web/auth.py"))


@pytest.mark.parametrize("path", sorted(DOMAIN.glob("*.py")), ids=lambda path: path.name)
def test_no_domain_module_imports_starlette_or_the_web_layer(path):
    imported = _imports(path)
    assert not {name for name in imported if name.split(".")[0] == "starlette"}
    assert not {name for name in imported if name.startswith("webapp.web")}


@pytest.mark.parametrize(
    ("question", "module"),
    [
        ("where is the 429 decided", "webapp/domain/throttle.py"),
        ("what happens when a PATCH changes the password", "webapp/domain/accounts.py"),
        ("where is the username rule", "webapp/domain/validation.py"),
        ("how a domain error becomes a response", "webapp/web/errors.py"),
        ("where CSRF is enforced", "webapp/web/csrf.py"),
    ],
)
def test_the_readme_layout_names_the_module_that_answers(question, module):
    readme = (ROOT / "README.md").read_text()
    layout = readme[readme.index("## Layout") :]
    name = module.rsplit("/", 1)[1]
    assert name in layout, f"the layout table does not name {module} ({question})"
    assert (ROOT / module).is_file()
