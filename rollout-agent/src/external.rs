//! External health sources for analysis: Prometheus instant queries and HTTP endpoints.

use std::time::Duration;

use crate::analysis::ExternalSource;

/// Blocking HTTP client for the external checks (short timeouts: a slow endpoint is an error,
/// and the check's `on_error` policy decides what it means).
pub struct HttpSource {
    http: reqwest::blocking::Client,
}

impl HttpSource {
    pub fn new() -> Result<Self, String> {
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(HttpSource { http })
    }
}

/// The first sample's value of a Prometheus `/api/v1/query` answer; `None` when empty.
pub fn prometheus_value(body: &serde_json::Value) -> Result<Option<f64>, String> {
    if body["status"] != "success" {
        return Err(format!(
            "query status {}: {}",
            body["status"], body["error"]
        ));
    }
    let data = &body["data"];
    let value = match data["resultType"].as_str() {
        Some("vector") => data["result"]
            .as_array()
            .and_then(|r| r.first())
            .map(|s| &s["value"][1]),
        Some("scalar") => Some(&data["result"][1]),
        other => return Err(format!("unsupported result type {other:?}")),
    };
    match value {
        None => Ok(None),
        Some(v) => v
            .as_str()
            .and_then(|s| s.parse::<f64>().ok())
            .filter(|f| f.is_finite())
            .map(Some)
            .ok_or_else(|| format!("not a number: {v}")),
    }
}

impl ExternalSource for HttpSource {
    fn prometheus(&self, url: &str, query: &str) -> Result<Option<f64>, String> {
        let endpoint = format!("{}/api/v1/query", url.trim_end_matches('/'));
        let resp = self
            .http
            .get(&endpoint)
            .query(&[("query", query)])
            .send()
            .map_err(|e| e.to_string())?;
        let body: serde_json::Value = resp.json().map_err(|e| e.to_string())?;
        prometheus_value(&body)
    }

    fn http_ok(&self, url: &str) -> Result<Result<(), String>, String> {
        let resp = self.http.get(url).send().map_err(|e| e.to_string())?;
        Ok(if resp.status().is_success() {
            Ok(())
        } else {
            Err(resp.status().to_string())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn prometheus_answers() {
        let v = json!({"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1.0,"0.25"]}]}});
        assert_eq!(prometheus_value(&v), Ok(Some(0.25)));
        let empty = json!({"status":"success","data":{"resultType":"vector","result":[]}});
        assert_eq!(prometheus_value(&empty), Ok(None));
        let err = json!({"status":"error","error":"bad query"});
        assert!(prometheus_value(&err).unwrap_err().contains("bad query"));
        let nan = json!({"status":"success","data":{"resultType":"scalar","result":[1.0,"NaN"]}});
        assert!(prometheus_value(&nan).is_err());
    }
}
