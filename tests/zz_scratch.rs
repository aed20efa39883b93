mod common;
use common::sim::*;
#[test]
fn scratch() {
    let mut sim = Sim::new(0);
    let a = sim.online("ann");
    let _b = sim.online("ben");
    let _c = sim.online("cat");
    sim.advance(73 + 316 + 170 + 1510 + 30 + 39 + 101 + 274);
    sim.half_open(a);
    sim.advance(97);
    sim.half_open(a);
    sim.advance(304 + 22 + 287 + 297 + 333 + 330 + 395 + 254 + 49 + 139 + 66 + 356 + 45 + 210);
    sim.set_delay(a, 114, 113);
    sim.advance(189 + 218);
    sim.drop_link(a);
    sim.advance(45_000);
    for (t, e) in &sim.nodes[a].events { eprintln!("{} {:?}", t - T0, e); }
    for (t, f) in &sim.nodes[a].received { if let holdfast::protocol::ServerFrame::Welcome(w) = f { eprintln!("W {} resumed={} {}", t - T0, w.resumed, w.session); } }
    eprintln!("resumes={} failures={}", sim.server.metrics().resumes, sim.server.metrics().resume_failures);
    for (t, o) in &sim.server_log { if let holdfast::engine::server::Output::Close{..} = o { eprintln!("S {} {:?}", t - T0, o); } }
}
