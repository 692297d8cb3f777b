//! The admin listener: `/metrics` and `/backends`.

use crate::support::*;

#[tokio::test]
async fn metrics_and_backends_report_traffic_per_backend() {
    let bs = backends(2).await;
    let mut args = vec!["--policy".to_string(), "weighted".into()];
    args.extend(backend_flags(&bs, &[3, 1]));
    let lb = Lb::flags(&args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let mut held = connect(lb.listen).await.unwrap();
    assert_eq!(held.echo(b"12345").await, b"12345");
    sequence(lb.listen, 3).await;

    let l = format!("listener=\"{}\"", lb.listen);
    // The sequence's connections close asynchronously inside the proxy.
    let mut text = String::new();
    for _ in 0..100 {
        let (status, body) = http_get(lb.admin, "/metrics").await;
        assert_eq!(status, 200);
        text = body;
        if text.contains(&format!("shoal_lb_listener_active{{{l}}} 1\n")) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let b0 = format!("{l},backend=\"{}\"", bs[0].addr);
    for line in [
        format!("shoal_lb_listener_accepted_total{{{l}}} 4"),
        format!("shoal_lb_listener_active{{{l}}} 1"),
        format!("shoal_lb_backend_connections_total{{{b0}}} 3"),
        format!("shoal_lb_backend_active{{{b0}}} 1"),
        format!("shoal_lb_backend_sent_bytes_total{{{b0}}} 5"),
        format!("shoal_lb_backend_weight{{{b0}}} 3"),
        format!("shoal_lb_backend_health{{{b0},state=\"up\"}} 1"),
        "# TYPE shoal_lb_backend_connections_total counter".to_string(),
    ] {
        assert!(
            text.lines().any(|x| x == line),
            "missing `{line}` in\n{text}"
        );
    }
    // Bytes from the backend: its greeting "b0\n" and the echo.
    assert!(
        text.contains(&format!("shoal_lb_backend_received_bytes_total{{{b0}}} 14")),
        "{text}"
    );

    let v = lb.backends().await;
    let first = &v[0]["backends"][0];
    assert_eq!(first["address"], bs[0].addr.to_string());
    assert_eq!(first["weight"], 3);
    assert_eq!(first["health"], "up");
    assert_eq!(first["active"], 1);
    assert_eq!(v[0]["policy"], "weighted");
    let (status, _) = http_get(lb.admin, "/nope").await;
    assert_eq!(status, 404);
}
