"""Page arguments as the original API took them: 1-based page, bounded page size."""

from dataclasses import dataclass

from services.common.errors import InvalidArgument

MAX_PAGE_SIZE = 100


@dataclass(frozen=True, slots=True)
class Page:
    number: int
    size: int

    @property
    def offset(self) -> int:
        return (self.number - 1) * self.size

    def has_next(self, total: int) -> bool:
        return self.offset + self.size < total


def page_from_request(page: int, page_size: int, *, default_size: int) -> Page:
    if page < 0:
        raise InvalidArgument("page must be 1 or more", field="page")
    if page_size < 0 or page_size > MAX_PAGE_SIZE:
        raise InvalidArgument(f"page_size must be between 1 and {MAX_PAGE_SIZE}", field="page_size")
    return Page(number=page or 1, size=page_size or default_size)
