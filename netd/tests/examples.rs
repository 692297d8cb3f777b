//! The files under examples/ stay valid: the demo's stack parses with no
//! warning and means what the demo says.

use shoal_netd::model::Policy;
use shoal_netd::model::PortMode;

#[test]
fn the_demo_stack_parses_cleanly() {
    let text = include_str!("../../examples/stack.yml");
    let stack = shoal_netd::compose::parse("examples/stack.yml", text).unwrap();
    assert!(stack.warnings.is_empty(), "{:?}", stack.warnings);
    assert_eq!(stack.networks.len(), 1);
    assert_eq!(
        stack.networks[0].subnet.unwrap().to_string(),
        "10.77.0.0/16"
    );
    let web = stack.services.iter().find(|s| s.name == "web").unwrap();
    assert_eq!(web.replicas, 4);
    assert_eq!(web.policy, Policy::RoundRobin);
    assert_eq!(web.ports[0].published, Some(8080));
    assert_eq!(web.ports[0].mode, PortMode::Http);
    assert_eq!(web.command, ["python3", "examples/web.py", "8000"]);
    let client = stack.services.iter().find(|s| s.name == "client").unwrap();
    assert_eq!(client.replicas, 1);
    assert!(client.ports.is_empty());
}
