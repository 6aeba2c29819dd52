//! The schedule's parameters: what the seed draws ([`Params`]) and the topology.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::MAX_SITES;
use crate::Config;

/// A topology.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topology {
    /// Every pair linked.
    Mesh,
    /// Everyone linked to the first replica.
    Hub,
    /// Each replica linked to the previous one.
    Chain,
}

/// What the seed drew.
#[derive(Clone, Debug)]
pub struct Params {
    /// Replicas at the start.
    pub initial: usize,
    /// Replicas at most (the rest are created mid-run).
    pub max_sites: usize,
    /// Random steps.
    pub steps: usize,
    /// Topology.
    pub topology: Topology,
    /// Probability that a link is one-way in the random phase.
    pub one_way: f64,
    /// Packet loss rate.
    pub p_loss: f64,
    /// Packet duplication rate.
    pub p_dup: f64,
    /// Packet corruption rate.
    pub p_corrupt: f64,
    /// Probability a delivery takes a random packet of the pool rather than the oldest.
    pub p_reorder: f64,
    /// Probability that a mutating call gets a failing write armed.
    pub p_crash: f64,
    /// Probability that an export is split into small parts.
    pub p_split: f64,
    /// 0: no restores; 1: default-mode restores; 2: every kind (override, wait-for, rollback).
    pub restores: u8,
    /// The restore window sites scrub with (None: no scrubs). Drawn from its own generator,
    /// so a schedule without scrubs is the same as before scrubs existed.
    pub retain_ms: Option<u64>,
    /// Every replica's resend interval (ms): short ones resend in the random phase, the
    /// default only after the heal's day (docs/protocol.md §5, "Resends").
    pub resend_ms: u64,
    /// Whether new replicas are made from snapshots too (the default run, and the profiles
    /// `retire` and `snapshots`).
    pub snapshots: bool,
    /// Whether replicas rotate their keys (profile `rekey`).
    pub rekey: bool,
}

impl Params {
    /// Draws a schedule's parameters from the seed's generator, then applies the overrides
    /// and the profile.
    pub(super) fn draw(rng: &mut ChaCha8Rng, cfg: &Config) -> Params {
        let initial = rng.gen_range(2..=MAX_SITES);
        let max_sites = rng.gen_range(initial..=MAX_SITES);
        let steps = rng.gen_range(10..=160);
        let topology = [Topology::Mesh, Topology::Hub, Topology::Chain][rng.gen_range(0..3)];
        let mut pick = |c: &[f64]| c[rng.gen_range(0..c.len())];
        let one_way = pick(&[0.0, 0.0, 0.2, 0.5]);
        let p_loss = pick(&[0.0, 0.0, 0.05, 0.15, 0.3]);
        let p_dup = pick(&[0.0, 0.05, 0.2]);
        let p_corrupt = pick(&[0.0, 0.0, 0.03, 0.1]);
        let p_reorder = pick(&[0.0, 0.3, 0.8]);
        let p_crash = pick(&[0.0, 0.0, 0.02, 0.08]);
        let p_split = pick(&[0.0, 0.0, 0.3]);
        let restores = match rng.gen_range(0..10) {
            0..=3 => 0,
            4..=6 => 1,
            _ => 2,
        };
        let resend_ms =
            [10_000, 60_000, 600_000, msite_core::keys::DEFAULT_RESEND_MS][rng.gen_range(0..4)];
        let mut p = Params {
            initial,
            max_sites,
            steps,
            topology,
            one_way,
            p_loss,
            p_dup,
            p_corrupt,
            p_reorder,
            p_crash,
            p_split,
            restores,
            retain_ms: draw_retention(cfg.seed),
            resend_ms,
            snapshots: false,
            rekey: false,
        };
        if let Some(cap) = cfg.replicas {
            p.max_sites = p.max_sites.min(cap.max(2));
            p.initial = p.initial.min(p.max_sites);
        }
        if let Some(s) = cfg.steps {
            p.steps = s;
        }
        // Profiles narrow a schedule after the draws, so a seed keeps its other parameters.
        match cfg.profile {
            crate::Profile::All | crate::Profile::Retire => p.snapshots = true,
            crate::Profile::Sync => p.restores = 0,
            crate::Profile::DefaultRestores => p.restores = 1,
            crate::Profile::Crashy => p.p_crash = 0.25,
            crate::Profile::Snapshots => p.snapshots = true,
            crate::Profile::Rekey => p.rekey = true,
        }
        p
    }
}

/// The restore window of a schedule's scrubs: none in half the schedules, else 0 (drop what
/// every sibling holds; no backup is then young enough to restore from), or a window of 15 s
/// or 45 s of simulated time (a step advances the clock by up to 5 s, 2.5 s on average, so a
/// schedule of up to 160 steps sees scrubs drop entries and sites restored after it).
fn draw_retention(seed: u64) -> Option<u64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5c4b_0b1e_7e7a_1a11);
    match rng.gen_range(0..20) {
        0..=9 => None,
        10..=12 => Some(0),
        13..=15 => Some(15_000),
        _ => Some(45_000),
    }
}
