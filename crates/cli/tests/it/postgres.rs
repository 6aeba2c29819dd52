//! The seed's procedure on PostgreSQL, through the binary: sites made with `--backend
//! postgres --url`, a backup (`pg_dump`), the store lost (its database dropped), `msite
//! restore` (`pg_restore` into a new database), `msite restorereplica`, the siblings' answers,
//! unlocked, and equal digests. The lab's own scratch server (Unix socket only) is stopped at
//! the end.

use msite_cli::backend::{ScratchOptions, ScratchServer};

use crate::Lab;

/// `msite ARGS… --backend postgres --url CONNINFO`.
fn with_url<'a>(args: &[&'a str], url: &'a str) -> Vec<&'a str> {
    let mut v = args.to_vec();
    v.extend(["--backend", "postgres", "--url", url]);
    v
}

/// Up to `rounds` rounds of `hops` (export, then import at the receiver); whether an import at
/// sanfran said it was unlocked.
fn rounds_until_unlocked(lab: &Lab, hops: &[(&str, &str)], rounds: usize) -> bool {
    for _ in 0..rounds {
        for (from, to) in hops {
            lab.send(from, to);
            let out = lab.import(to);
            if *to == "sanfran" && out.contains("Database sanfran is unlocked after restoration.") {
                return true;
            }
        }
    }
    false
}

#[test]
fn the_seed_procedure_works_end_to_end_on_postgres() {
    let server = ScratchServer::start(ScratchOptions {
        no_fsync: true,
        ..Default::default()
    })
    .expect("a scratch PostgreSQL server");
    let lab = Lab::new();
    let urls: Vec<String> = ["boston", "sanfran", "bangalore"]
        .iter()
        .map(|s| server.conninfo(&format!("site_{s}")))
        .collect();
    lab.ok(&with_url(
        &["init", "boston", "--family", "proj", "--replica", "boston"],
        &urls[0],
    ));
    for (name, url) in [("sanfran", &urls[1]), ("bangalore", &urls[2])] {
        let id_file = format!("{name}.age");
        let out = format!("transfer-{name}");
        let (_, pkt) = lab.creation_packet("boston", name, &out, false, &[]);
        let import = ["mkreplica", "import", &pkt, name, "--identity", &id_file];
        lab.ok(&with_url(&import, url));
    }
    // The site's store directory holds the connection string, no password.
    let conninfo = std::fs::read_to_string(lab.path("sanfran/store/conninfo")).expect("conninfo");
    assert_eq!(conninfo.trim(), urls[1]);
    let cfg = std::fs::read_to_string(lab.path("sanfran/site.json")).expect("site.json");
    assert!(cfg.contains("\"postgres\""), "{cfg}");

    lab.ok(&["-C", "sanfran", "mkbrtype", "sf"]);
    let f = lab.write("w/a.c", "int a;\n");
    lab.ok(&[
        "-C", "sanfran", "checkin", "a.c", &f, "--branch", "sf", "-m", "first",
    ]);
    lab.settle();
    lab.ok(&["-C", "sanfran", "check"]);
    lab.ok(&["-C", "sanfran", "backup", "bk"]);
    assert!(
        lab.path("bk/store/dump.pgdump").is_file(),
        "pg_dump's custom format, streamed into the backup"
    );
    // Work after the backup reaches the hub, then the store is lost: its database dropped.
    let f = lab.write("w/b.c", "int b; /* after the backup */\n");
    lab.ok(&["-C", "sanfran", "checkin", "b.c", &f, "--branch", "sf"]);
    lab.send("sanfran", "boston");
    lab.import("boston");
    server
        .execute("postgres", "DROP DATABASE site_sanfran WITH (FORCE)")
        .expect("drop the database");
    let err = lab.fails(1, &["-C", "sanfran", "lsreplica"]);
    assert!(err.contains("site_sanfran"), "{err}");

    let out = lab.ok(&["restore", "bk", "sanfran"]);
    assert!(out.contains("msite restorereplica"), "{out}");
    let restored = std::fs::read_to_string(lab.path("sanfran/store/conninfo")).expect("conninfo");
    assert!(
        restored.contains("dbname=site_sanfran_r_"),
        "restored into a new database: {restored}"
    );
    lab.ok(&["-C", "sanfran", "check"]);
    lab.ok(&["-C", "sanfran", "restorereplica"]);
    let hops = [
        ("sanfran", "boston"),
        ("boston", "bangalore"),
        ("bangalore", "boston"),
        ("boston", "sanfran"),
    ];
    let unlocked = rounds_until_unlocked(&lab, &hops, 6);
    assert!(unlocked, "sanfran was never unlocked");
    lab.settle();
    assert_eq!(
        lab.ok(&["-C", "sanfran", "cat", "b.c@@sf/1"]),
        "int b; /* after the backup */\n",
        "the version made after the backup came back"
    );
    let d = lab.digest("boston");
    assert_eq!(lab.digest("sanfran"), d);
    assert_eq!(lab.digest("bangalore"), d);
    drop(lab);
    drop(server);
}

/// A scratch PostgreSQL server of the test's own (Unix socket only, no fsync).
fn scratch_server() -> ScratchServer {
    ScratchServer::start(ScratchOptions {
        no_fsync: true,
        ..Default::default()
    })
    .expect("a scratch PostgreSQL server")
}

/// boston made on `hub`, and sanfran made from boston's creation packet on `sf`.
fn boston_and_sanfran(lab: &Lab, hub: &ScratchServer, sf: &ScratchServer) {
    lab.ok(&with_url(
        &["init", "boston", "--family", "proj", "--replica", "boston"],
        &hub.conninfo("site_boston"),
    ));
    let (_, pkt) = lab.creation_packet("boston", "sanfran", "t", false, &[]);
    lab.ok(&with_url(
        &[
            "mkreplica",
            "import",
            &pkt,
            "sanfran",
            "--identity",
            "sanfran.age",
        ],
        &sf.conninfo("site_sanfran"),
    ));
}

#[test]
fn a_store_whose_server_is_lost_is_restored_onto_another_server() {
    let (hub_server, lost_server, new_server) =
        (scratch_server(), scratch_server(), scratch_server());
    let lab = Lab::new();
    boston_and_sanfran(&lab, &hub_server, &lost_server);
    lab.ok(&["-C", "sanfran", "mkbrtype", "sf"]);
    let f = lab.write("w/a.c", "int a;\n");
    lab.ok(&["-C", "sanfran", "checkin", "a.c", &f, "--branch", "sf"]);
    lab.send("sanfran", "boston");
    lab.import("boston");
    lab.ok(&["-C", "sanfran", "backup", "bk"]);
    let f = lab.write("w/b.c", "int b; /* after the backup */\n");
    lab.ok(&["-C", "sanfran", "checkin", "b.c", &f, "--branch", "sf"]);
    lab.send("sanfran", "boston");
    lab.import("boston");

    // sanfran's database server is gone for good.
    drop(lost_server);
    let err = lab.fails(1, &["restore", "bk", "sanfran"]);
    assert!(err.contains("was not restored"), "{err}");
    // A database that exists already is never restored over.
    new_server
        .execute("postgres", "CREATE DATABASE taken")
        .expect("create a database");
    let err = lab.fails(
        1,
        &[
            "restore",
            "bk",
            "sanfran",
            "--url",
            &new_server.conninfo("taken"),
        ],
    );
    assert!(err.contains("exists already"), "{err}");
    let url = new_server.conninfo("site_sanfran_2");
    let out = lab.ok(&["restore", "bk", "sanfran", "--url", &url]);
    assert!(out.contains("msite restorereplica"), "{out}");
    let conninfo = std::fs::read_to_string(lab.path("sanfran/store/conninfo")).expect("conninfo");
    assert_eq!(
        conninfo.trim(),
        url,
        "the store now lives on the new server"
    );
    lab.ok(&["-C", "sanfran", "check"]);
    lab.ok(&["-C", "sanfran", "restorereplica"]);
    let hops = [("sanfran", "boston"), ("boston", "sanfran")];
    let unlocked = rounds_until_unlocked(&lab, &hops, 4);
    assert!(unlocked, "sanfran was never unlocked");
    assert_eq!(
        lab.ok(&["-C", "sanfran", "cat", "b.c@@sf/1"]),
        "int b; /* after the backup */\n",
        "the version made after the backup came back from boston"
    );
    drop(lab);
}

/// Daemons carry on across a restart of a site's database server: while the server is down
/// the site's daemon logs that its store cannot be opened and tries again each round, the
/// packet shipped to it waits in its bay, and once the server is back the same daemon
/// imports it (every round opens the store, so a connection lost with the old server is
/// never reused).
#[cfg(feature = "serve")]
#[test]
fn daemons_on_postgres_carry_on_after_the_server_restarts() {
    use crate::serve::{converged, free_port, ok_soon, routes, url, wait_for, Daemon};
    let (hub_server, mut sf_server) = (scratch_server(), scratch_server());
    let lab = Lab::new();
    boston_and_sanfran(&lab, &hub_server, &sf_server);
    let (pb, ps) = (free_port(), free_port());
    routes(&lab, "boston", Some(pb), "", &[("sanfran", url(ps))]);
    routes(&lab, "sanfran", Some(ps), "", &[("boston", url(pb))]);
    let boston = Daemon::start(&lab, "boston", "boston.log");
    let sanfran = Daemon::start(&lab, "sanfran", "sanfran.log");
    let both = [&boston, &sanfran];
    wait_for("the daemons to start", &both, || {
        both.iter().all(|d| d.log().contains("msite serve started"))
    });

    sf_server.stop().expect("stop sanfran's server");
    lab.write("c.c", "int during_the_outage;\n");
    ok_soon(&lab, &["-C", "boston", "checkin", "c.c", "c.c"]);
    wait_for(
        "sanfran's daemon to find its store unreachable",
        &both,
        || sanfran.log().contains("the store cannot be opened now"),
    );
    sf_server
        .start_server()
        .expect("start sanfran's server again");
    wait_for(
        "the change to reach sanfran after the restart",
        &both,
        || {
            lab.run(&["-C", "sanfran", "cat", "c.c"]).stdout == b"int during_the_outage;\n"
                && converged(&lab, &["boston", "sanfran"])
        },
    );
    assert_eq!(
        sanfran.terminate(),
        Some(0),
        "sanfran's daemon stops cleanly"
    );
    assert_eq!(boston.terminate(), Some(0));
    drop(lab);
}
