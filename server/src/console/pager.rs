//! Long lists in pages: which rows a page shows, and the links to its neighbours that keep the
//! page's filters. Every list a page could grow without bound (patients due, the adverse-event
//! queue, clinics) is paged, so that a page stays well under 100 KB at any registry size.

use super::ConsoleError;

/// One page of a list, as the page's navigation shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pager {
    /// The rows to skip.
    pub offset: u64,
    /// Rows per page.
    pub per: u32,
    /// `101–200 of 1532`, `none`.
    pub range: String,
    /// What the navigation is for, for its `aria-label` (`Patients`).
    pub label: &'static str,
    pub prev: Option<String>,
    pub next: Option<String>,
    /// More than one page: show the navigation.
    pub several: bool,
}

impl Pager {
    /// The page shown when `requested` is asked of `total` rows at `per` a page: the last page
    /// for one past it.
    pub fn page_of(requested: u64, per: u32, total: u64) -> u64 {
        let pages = total.div_ceil(u64::from(per.max(1))).max(1);
        requested.clamp(1, pages)
    }

    /// This page's rows of the whole list.
    pub fn rows<T>(&self, all: impl IntoIterator<Item = T>) -> Vec<T> {
        all.into_iter()
            .skip(usize::try_from(self.offset).unwrap_or(usize::MAX))
            .take(self.per as usize)
            .collect()
    }

    /// The page `requested` (1-based; past the last page shows the last) of a list of `total`
    /// rows at `per` a page. The links go to `path` with `keep` (the page's filters; empty
    /// values are left out) and `param=N`.
    pub fn new(
        path: &str,
        keep: &[(&str, &str)],
        param: &str,
        requested: u64,
        per: u32,
        total: u64,
        label: &'static str,
    ) -> Pager {
        let per64 = u64::from(per.max(1));
        let pages = total.div_ceil(per64).max(1);
        let page = Pager::page_of(requested, per, total);
        let offset = (page - 1) * per64;
        let href = |n: u64| {
            let mut q = form_urlencoded::Serializer::new(String::new());
            for (k, v) in keep.iter().filter(|(k, v)| !v.is_empty() && *k != param) {
                q.append_pair(k, v);
            }
            if n > 1 {
                q.append_pair(param, &n.to_string());
            }
            let q = q.finish();
            if q.is_empty() {
                path.to_string()
            } else {
                format!("{path}?{q}")
            }
        };
        Pager {
            offset,
            per: per.max(1),
            range: if total == 0 {
                "none".into()
            } else {
                format!("{}–{} of {total}", offset + 1, (offset + per64).min(total))
            },
            label,
            prev: (page > 1).then(|| href(page - 1)),
            next: (page < pages).then(|| href(page + 1)),
            several: pages > 1,
        }
    }
}

/// A `page` query parameter: absent or empty is the first page; anything but a positive number
/// is refused (400, saying why).
pub fn page_param(v: &Option<String>, name: &str) -> Result<u64, ConsoleError> {
    match v.as_deref().map(str::trim) {
        None | Some("") => Ok(1),
        Some(s) => s.parse::<u64>().ok().filter(|n| *n >= 1).ok_or_else(|| {
            ConsoleError::BadRequest(format!("{name} must be a page number from 1, not {s:?}"))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_middle_page_links_both_ways_and_keeps_the_filters() {
        let p = Pager::new(
            "/console/followup",
            &[("clinic", "ab12"), ("visit", ""), ("state", "due & late")],
            "page",
            2,
            100,
            250,
            "Patients",
        );
        assert_eq!(p.offset, 100);
        assert_eq!(p.range, "101–200 of 250");
        assert_eq!(
            p.prev.as_deref(),
            Some("/console/followup?clinic=ab12&state=due+%26+late")
        );
        assert_eq!(
            p.next.as_deref(),
            Some("/console/followup?clinic=ab12&state=due+%26+late&page=3")
        );
        assert!(p.several);
        assert_eq!(p.rows(0..250), (100..200).collect::<Vec<_>>());
    }

    #[test]
    fn the_ends_and_the_empty_list() {
        let last = Pager::new("/x", &[], "page", 3, 100, 250, "Events");
        assert_eq!((last.offset, last.range.as_str()), (200, "201–250 of 250"));
        assert_eq!(last.next, None);
        assert_eq!(last.prev.as_deref(), Some("/x?page=2"));
        // Past the end shows the last page rather than nothing.
        assert_eq!(Pager::new("/x", &[], "page", 99, 100, 250, "Events"), last);
        let one = Pager::new("/x", &[("page", "4")], "page", 1, 100, 7, "Events");
        assert_eq!((one.range.as_str(), one.several), ("1–7 of 7", false));
        assert_eq!((one.prev, one.next), (None, None));
        let none = Pager::new("/x", &[], "page", 1, 100, 0, "Events");
        assert_eq!((none.offset, none.range.as_str()), (0, "none"));
    }

    #[test]
    fn page_numbers_are_checked() {
        assert_eq!(page_param(&None, "page").ok(), Some(1));
        assert_eq!(page_param(&Some(String::new()), "page").ok(), Some(1));
        assert_eq!(page_param(&Some("3".into()), "page").ok(), Some(3));
        for bad in ["0", "-1", "two", "1e3"] {
            assert!(page_param(&Some(bad.into()), "page").is_err(), "{bad}");
        }
    }
}
