"""The base of the synthetic site datasets: a multi-site set generated into a cache on first
use, one site of which the real loader of its layout then reads."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

from siteflow.config.validation import defaults
from siteflow.core.errors import OptionError
from siteflow.datasets.base import Split
from siteflow.datasets.synthetic.cache import cached_generation

DEFAULT_CACHE = ".cache/synthetic"


class GeneratedSites:
    """Mixin placed before the real loader in a synthetic dataset's bases, e.g.
    ``class SyntheticFundusDataset(GeneratedSites, DofeDomainDataset)``.

    The options every generator shares: ``root_path``, the cache folder (relative paths start
    at the working directory), into which the whole set is generated as
    ``<root_path>/<kind>-<hash of the generator's arguments>`` on first use (see
    :func:`~siteflow.datasets.synthetic.cache.cached_generation`); ``folder``, the site to
    read; ``train_per_site``, ``test_per_site``, ``native_size`` and ``seed``, passed to the
    generator (None: the generator's own default). The other options go to the loader.

    A subclass names the ``kind`` of set and its ``generator`` (``generator(root, **arguments)``
    writes every site under ``root``), lists the generated sites with :meth:`_site_folders`,
    says with :meth:`_loader_options` where the loader finds the site, and may add generator
    arguments of its own options with :meth:`_generator_options`. After ``__init__``,
    ``self.site`` is the site read and ``self.generation`` all the generator's arguments.

    Args:
        root_path: The cache folder the set is generated into (relative paths start at the
            working directory); a set already there with the same parameters is reused.
        folder: The generated site to read (the subclass lists them).
        train_per_site: Images of each site's training part (train and val); None: the
            generator's default.
        test_per_site: Images of each site's test split; None: the generator's default.
        native_size: ``[first, last]`` image size in pixels, spread linearly over the sites
            (the side of square images, or the width where the layout has its own aspect
            ratio); None: the generator's default.
        seed: Seed of the generator's random numbers; another seed draws another set (in
            another cache folder).
    """

    kind: ClassVar[str]
    generator: ClassVar[Callable[..., Path]]
    site_keys: ClassVar[tuple[str, ...]] = ("folder",)  # a subclass's default folder is one site's
    # Entries added to the cache key, e.g. a version to bump when the generated files change.
    cache_key_extra: ClassVar[dict[str, Any]] = {}

    def __init__(
        self,
        split: Split,
        *,
        root_path: str = DEFAULT_CACHE,
        folder: str,
        train_per_site: int | None = None,
        test_per_site: int | None = None,
        native_size: tuple[int, ...] | None = None,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        given = {
            "train_per_site": train_per_site,
            "test_per_site": test_per_site,
            "native_size": native_size,
            "seed": seed,
            **self._generator_options(),
        }
        chosen = {name: value for name, value in given.items() if value is not None}
        self.generation: dict[str, Any] = {**defaults(self.generator), **chosen}
        sites = self._site_folders()
        if folder not in sites:
            raise ValueError(f"folder {folder!r} is not a generated site; choose one of {sites}")
        self.site = folder
        key = {**self.generation, **self.cache_key_extra}
        data = cached_generation(root_path, self.kind, key, partial(self.generator, **self.generation))
        super().__init__(split, **self._loader_options(data), **kwargs)

    @classmethod
    def required_paths(cls, **kwargs: Any) -> dict[str, Path]:
        """None: the data is generated when missing."""
        return {}

    @classmethod
    def _spec(cls, options: dict[str, Any]) -> Any:
        """The loader's :meth:`describe`, after checking the generator's counts (before any
        file is written: a site needs a training and a test image)."""
        for name in ("train_per_site", "test_per_site"):
            value = options.get(name)
            if value is not None and value < 1:
                raise OptionError(name, f"must be at least 1 (every site needs training and test images), got {value}")
        return super()._spec(options)  # type: ignore[misc]  # the loader after this mixin

    def _generator_options(self) -> dict[str, Any]:
        """Generator arguments from the subclass's own options (None: the generator's default)."""
        return {}

    def _site_folders(self) -> list[str]:
        """The sites that the generator writes with ``self.generation``."""
        raise NotImplementedError

    def _loader_options(self, data: Path) -> dict[str, Any]:
        """The loader's options that locate ``self.site`` in the generated set ``data``."""
        raise NotImplementedError
