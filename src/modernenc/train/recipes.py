"""The recipe yamls shipped with the package: `quickstart/pretrain`, `finetune_ade`, ...

A checkout has them as `yamls/` too (a link to this folder), so `python train.py yamls/pretrain.yaml` and
`modernenc train pretrain` read the same file. `modernenc recipes` lists them and writes one out.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from modernenc.utils.suggest import did_you_mean

RECIPES_DIR = Path(str(files("modernenc") / "recipes"))


def list_recipes() -> dict[str, Path]:
    """Recipe name (path below the recipes folder, without `.yaml`) -> file."""
    return {
        path.relative_to(RECIPES_DIR).with_suffix("").as_posix(): path
        for path in sorted(RECIPES_DIR.rglob("*.yaml"))
    }


def recipe_path(name: str) -> Path:
    """The packaged recipe `name` (`quickstart/pretrain`, `yamls/quickstart/pretrain.yaml` also works)."""
    key = name.removeprefix("yamls/").removesuffix(".yaml")
    recipes = list_recipes()
    if key not in recipes:
        raise FileNotFoundError(
            f"no recipe {name!r}{did_you_mean(key, recipes)}; `modernenc recipes` lists them"
        )
    return recipes[key]


def summary(path: Path) -> str:
    """The recipe's first comment line: what it trains."""
    first = path.read_text(encoding="utf-8").splitlines()[0]
    return first.removeprefix("#").strip() if first.startswith("#") else ""
