//! The HTML pages the `shardhub` binary serves, embedded in the library so that an application
//! that runs the server itself can serve them too, through the public API:
//!
//! ```no_run
//! use shardhub::{pages, Config, Hooks, Server};
//!
//! let hooks = Hooks::default().page(pages::DASHBOARD_PATH, pages::HTML, pages::DASHBOARD);
//! let server = Server::builder(Config::default()).hooks(hooks).build()?;
//! # Ok::<(), shardhub::StartError>(())
//! ```
//!
//! Each page is one self-contained file (inline CSS and script, nothing fetched from elsewhere,
//! no build step) in this directory. The library serves none of them by itself.

/// The content type of the pages.
pub const HTML: &str = "text/html; charset=utf-8";

/// Where the `shardhub` binary serves [`DASHBOARD`].
pub const DASHBOARD_PATH: &str = "/dashboard";

/// The live operator dashboard: it polls `GET /api/v1/stats?detail=shards,histograms` and
/// `GET /api/v1/rooms?top=10` once a second (`docs/http-api.md`) from the origin that served it
/// and shows connections and rates per shard (and per node in cluster mode), the largest
/// rooms, closes and drops, and the latency histograms as plots. When the API answers 401 it
/// asks for the API key, keeps it in the tab's `sessionStorage` and sends it as
/// `Authorization: Bearer`; with the API off (403) it says so. Client data (room names, node
/// names) reaches the page's DOM only as text.
pub const DASHBOARD: &str = include_str!("dashboard.html");

#[cfg(test)]
mod tests {
    use super::*;

    /// The page is self-contained and puts data into the DOM as text only: no external
    /// resources, no `innerHTML`/`outerHTML`/`insertAdjacentHTML`/`document.write`.
    #[test]
    fn the_dashboard_is_self_contained_and_writes_no_markup_from_data() {
        assert!(DASHBOARD.starts_with("<!doctype html>"));
        for banned in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "src=\"http",
            "href=\"http",
            "<link",
            "import(",
            "eval(",
        ] {
            assert!(!DASHBOARD.contains(banned), "the dashboard uses {banned}");
        }
        // It reads exactly the documented routes.
        assert!(DASHBOARD.contains("\"/api/v1/stats?detail=shards,histograms\""));
        assert!(DASHBOARD.contains("\"/api/v1/rooms?top=10\""));
    }
}
