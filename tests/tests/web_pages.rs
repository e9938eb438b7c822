//! The web client's pages as the server hands them out (`server/src/web.rs`): `/` and `/join`
//! answer the app's `index.html` with a Content-Security-Policy that allows nothing but this
//! server (`connect-src 'self'`: the websockets too, and no scheme-wide `ws:`/`wss:`), and its
//! script comes with the same policy.
//!
//! Builds nothing: when `web-client/dist` exists (`scripts/test.sh` builds it before the Rust
//! tests), the page must be served with that policy; when it does not, the server must say how to
//! build the client (503), and this test checks that instead.

use std::path::PathBuf;

use yuntiao_tests::Server;

/// The policy the pages must carry, directive by directive.
const DIRECTIVES: &[&str] = &[
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "connect-src 'self'",
    "font-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "frame-ancestors 'none'",
];

fn built() -> bool {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../web-client/dist/index.html")
        .exists()
}

/// Checks one response's policy: every directive above, and nothing that lets a script reach
/// another host.
fn check_policy(what: &str, resp: &reqwest::Response) {
    let csp = resp
        .headers()
        .get("content-security-policy")
        .unwrap_or_else(|| panic!("{what}: no Content-Security-Policy header"))
        .to_str()
        .expect("CSP is ASCII")
        .to_owned();
    let directives: Vec<&str> = csp.split(';').map(str::trim).collect();
    for d in DIRECTIVES {
        assert!(
            directives.contains(d),
            "{what}: the policy lacks `{d}`: {csp}"
        );
    }
    for wide in [
        "ws:",
        "wss:",
        "http:",
        "https:",
        "*",
        "'unsafe-inline'",
        "'unsafe-eval'",
    ] {
        assert!(
            !csp.split_whitespace()
                .any(|t| t.trim_end_matches(';') == wide),
            "{what}: the policy allows `{wide}`: {csp}"
        );
    }
}

#[tokio::test]
async fn pages_carry_a_same_origin_only_policy() {
    let server = Server::embedded().await.expect("start server");
    let http = reqwest::Client::new();
    let built = built();
    let mut script = None;
    for path in ["/", "/join"] {
        let resp = http
            .get(server.url(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = resp.status().as_u16();
        if !built {
            assert_eq!(
                status, 503,
                "GET {path} without web-client/dist: expected the 'not built' answer"
            );
            let body = resp.text().await.expect("body");
            assert!(
                body.contains("npm run build"),
                "GET {path}: the 'not built' page does not say how to build the client: {body}"
            );
            continue;
        }
        assert_eq!(status, 200, "GET {path} with web-client/dist built");
        check_policy(&format!("GET {path}"), &resp);
        let ctype = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(ctype.starts_with("text/html"), "GET {path}: {ctype}");
        let body = resp.text().await.expect("body");
        assert!(
            !body.contains("<script>") && !body.contains("http://") && !body.contains("https://"),
            "GET {path}: inline script or an absolute URL in the page"
        );
        // The app's own script, from this server.
        let src = body
            .split("src=\"")
            .skip(1)
            .filter_map(|s| s.split('"').next())
            .find(|s| s.starts_with("/assets/") && s.ends_with(".js"))
            .unwrap_or_else(|| panic!("GET {path}: no /assets/*.js script in the page"))
            .to_owned();
        script = Some(src);
    }
    if let Some(src) = script {
        let resp = http.get(server.url(&src)).send().await.expect("GET script");
        assert_eq!(resp.status().as_u16(), 200, "GET {src}");
        check_policy(&format!("GET {src}"), &resp);
    } else {
        eprintln!("web-client/dist is not built: checked the 'not built' answer only");
    }
}
