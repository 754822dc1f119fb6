"""Sample counts capped by what each site declared when it enrolled (the strategy option
``enrolled_samples``): a site that claims more training samples in a round than it declared
is counted with its declared number, so a claimed count cannot buy a larger share of the
average."""

from __future__ import annotations

import logging
from typing import Mapping, Sequence

from siteflow.core.errors import OptionError

log = logging.getLogger(__name__)


class Enrolment:
    """The declared training-sample count of every site of a federation.

    Args:
        declared: site name -> the most training samples it may claim (a positive integer).

    Raises:
        OptionError: (option ``enrolled_samples``) a count that is not a positive integer.
    """

    def __init__(self, declared: Mapping[str, int]) -> None:
        if not isinstance(declared, Mapping) or not declared:
            raise OptionError("enrolled_samples", f"needs site name -> declared training-sample count, got {declared!r}")
        for site, count in declared.items():
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise OptionError("enrolled_samples", f"{site}: the declared count must be a positive integer, got {count!r}")
        self.declared = dict(declared)

    def check_sites(self, sites: Sequence[str]) -> None:
        """Refuse a declaration that misses a site of the federation or names another."""
        missing = [site for site in sites if site not in self.declared]
        unknown = [site for site in self.declared if site not in sites]
        if missing or unknown:
            raise OptionError(
                "enrolled_samples",
                f"must declare every site of the study ({', '.join(sites)}) and no other: "
                f"missing {missing or 'none'}, unknown {unknown or 'none'}",
            )

    def cap(self, round_number: int, site: str, count: int) -> int:
        """``count``, or the site's declared count if it claims more (logged)."""
        declared = self.declared[site]
        if count > declared:
            log.warning("round %d: site %s claims %d training samples, enrolled with %d: counted as %d", round_number, site, count, declared, declared)
            return declared
        return count
