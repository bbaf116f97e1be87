//! The OpenAPI document: every route of the router is in it, and the served document is the
//! file in the repository.

use mcptrail_server::api::{OPENAPI, ROUTES};
use mcptrail_server::ServeConfig;
use serde_json::Value;

use crate::harness::Server;

#[test]
fn every_route_is_documented_and_the_served_document_is_the_file() {
    let doc: Value = serde_json::from_str(OPENAPI).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    for r in ROUTES {
        let op = &paths
            .get(r.path)
            .unwrap_or_else(|| panic!("{} is not in docs/openapi.json", r.path))
            [r.method.to_lowercase()];
        assert!(
            op.is_object(),
            "{} {} is not in docs/openapi.json",
            r.method,
            r.path
        );
        let roles: Vec<&str> = op["x-roles"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let want: Vec<&str> = r.roles.iter().map(|r| r.as_str()).collect();
        assert_eq!(roles, want, "x-roles of {} {}", r.method, r.path);
    }
    let documented: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(
        documented,
        ROUTES.len(),
        "the document lists routes the server does not have"
    );
    let file = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/openapi.json"
    ))
    .unwrap();
    let s = Server::start(ServeConfig::default());
    let mut resp = s
        .agent
        .get(format!("{}/api/v1/openapi.json", s.base))
        .call()
        .unwrap();
    assert_eq!(resp.body_mut().read_to_string().unwrap(), file);
    let (st, html) = s.get(None, "/");
    assert_eq!(st, 200);
    assert!(html.as_str().unwrap().contains("/assets/app.js"));
}
