//! Multi-replica protocol scenarios, run on every backend.
//!
//! Each scenario is a plain function `case_xxx<F: StoreFactory>(factory: &F)` that builds a
//! [`Family`] of replicas, each in its own store directory opened by the factory, moves packets
//! between them by hand (the "mail room": hubs, chains, meshes; lost, duplicated and reordered
//! packets), and panics when the protocol misbehaves: convergence, mastership, concurrent names,
//! refusals of bad packets, and the restore procedure with its hard cases (PROTOCOL §6.9).
//! Backups and restores go through the store's own [`Store::backup`] and
//! [`Store::restore_backup`], as `msite backup` and `msite restore` do.
//!
//! A backend runs all of them with one macro call in its integration-test binary, next to the
//! conformance suite and with the same factory (which must be `Clone`: the crash scenario wraps
//! it in a fault-injecting factory):
//!
//! ```text
//! mod scenarios {
//!     msite_core::protocol_scenario_tests!(super::SqliteFactory);
//! }
//! ```

mod content;
mod delta;
mod fork;
mod mastership;
mod reports;
mod restore;
mod retain;
mod retire;
mod sealing;
mod sitekey;
mod snapshot;
mod sync;
mod trust;

pub use content::*;
pub use delta::*;
pub use fork::*;
pub use mastership::*;
pub use reports::*;
pub use restore::*;
pub use retain::*;
pub use retire::*;
pub use sealing::*;
pub use sitekey::*;
pub use snapshot::*;
pub use sync::*;
pub use trust::*;

use std::cell::Cell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::conformance::StoreFactory;
use crate::store::Store;
use crate::{CoreError, Env, ImportOutcome, Incoming, Replica, ReplicaId, SimEnv, VersionSel};

/// A backup of one site: a directory written by [`Store::backup`].
pub struct Backup(PathBuf);

/// A family of replicas named r0, r1, …, each in its own store directory under one temporary
/// directory, with a deterministic environment shared by all.
pub struct Family<'a, F: StoreFactory> {
    factory: &'a F,
    root: tempfile::TempDir,
    next_dir: Cell<usize>,
    /// The clock and ids every replica sees.
    pub env: SimEnv,
    /// The replicas, by index.
    pub sites: Vec<Replica<F::Store>>,
    /// Their names, by index.
    pub names: Vec<String>,
    /// Their store directories, by index.
    dirs: Vec<PathBuf>,
}

/// The environment handle a [`Replica`] takes.
pub fn env_arc(env: &SimEnv) -> Arc<dyn Env> {
    Arc::new(env.clone())
}

impl<'a, F: StoreFactory> Family<'a, F> {
    /// A family of `n` replicas named r0, r1, …, each created from r0.
    pub fn new(factory: &'a F, n: usize, seed: u64) -> Self {
        let env = SimEnv::new(seed);
        let root = tempfile::Builder::new()
            .prefix("msite-scenario-")
            .tempdir()
            .expect("a temporary directory");
        let mut f = Family {
            factory,
            root,
            next_dir: Cell::new(0),
            env,
            sites: Vec::new(),
            names: Vec::new(),
            dirs: Vec::new(),
        };
        let dir = f.fresh_path("r0");
        let first = Replica::init(f.open_at(&dir), env_arc(&f.env), "fam", "r0").unwrap();
        f.sites.push(first);
        f.names.push("r0".into());
        f.dirs.push(dir);
        for i in 1..n {
            f.mkreplica(0, &format!("r{i}"));
        }
        f
    }

    /// A new path under the family's directory, never used before.
    fn fresh_path(&self, what: &str) -> PathBuf {
        let n = self.next_dir.get();
        self.next_dir.set(n + 1);
        self.root.path().join(format!("{n:03}-{what}"))
    }

    fn open_at(&self, dir: &Path) -> F::Store {
        self.factory
            .open(dir)
            .unwrap_or_else(|e| panic!("cannot open the store at {}: {e}", dir.display()))
    }

    /// Creates a replica from site `from`.
    pub fn mkreplica(&mut self, from: usize, name: &str) -> usize {
        self.mkreplica_keeping_packet(from, name).0
    }

    /// Creates a replica from site `from` with a snapshot creation packet (`--snapshot` of
    /// `msite mkreplica export`); returns its index.
    pub fn mkreplica_snapshot(&mut self, from: usize, name: &str) -> usize {
        let parts = self.snapshot_packet(from, name);
        self.create_from(name, parts).unwrap()
    }

    /// The signing key the new site `name` makes for itself (`msite identity --new`); the
    /// same for the same name, so a packet and the site made from it agree.
    pub fn site_key(name: &str) -> crate::SiteKey {
        crate::SiteKey::from_secret(*blake3::hash(name.as_bytes()).as_bytes())
    }

    /// The snapshot creation packet of a new replica `name` made at site `from`, with the
    /// key [`Family::site_key`] gives it.
    pub fn snapshot_packet(&self, from: usize, name: &str) -> Vec<Vec<u8>> {
        let key = Self::site_key(name).public();
        let plan = self.sites[from]
            .plan_mkreplica_snapshot(name, &key)
            .unwrap();
        self.sites[from].write_plan_to_parts(&plan, None).unwrap()
    }

    /// Makes a new site `name` from a creation packet's parts in a new store; its index, or
    /// the error (the store then stays in the family's directory, returned for inspection).
    pub fn create_from(
        &mut self,
        name: &str,
        parts: Vec<Vec<u8>>,
    ) -> Result<usize, (CoreError, PathBuf)> {
        let dir = self.fresh_path(name);
        let made = Incoming::from_parts(parts, "creation").and_then(|pkt| {
            let key = Self::site_key(name);
            Replica::create_from_packet(self.open_at(&dir), env_arc(&self.env), pkt, &key)
        });
        match made {
            Ok(r) => {
                self.sites.push(r);
                self.names.push(name.into());
                self.dirs.push(dir);
                Ok(self.sites.len() - 1)
            }
            Err(e) => Err((e, dir)),
        }
    }

    /// Opens the store at `dir` as a replica (what the next command at a site does).
    pub fn open_replica(&self, dir: &Path) -> Result<Replica<F::Store>, CoreError> {
        Replica::open(self.open_at(dir), env_arc(&self.env))
    }

    /// Creates a replica from site `from`; returns its index and the creation packet's parts.
    pub fn mkreplica_keeping_packet(&mut self, from: usize, name: &str) -> (usize, Vec<Vec<u8>>) {
        let key = crate::SiteKey::generate(&self.env);
        let plan = self.sites[from]
            .plan_mkreplica(name, &key.public())
            .unwrap();
        let parts = self.sites[from].write_plan_to_parts(&plan, None).unwrap();
        let pkt = Incoming::from_parts(parts.clone(), "creation").unwrap();
        let dir = self.fresh_path(name);
        let r =
            Replica::create_from_packet(self.open_at(&dir), env_arc(&self.env), pkt, &key).unwrap();
        self.sites.push(r);
        self.names.push(name.into());
        self.dirs.push(dir);
        (self.sites.len() - 1, parts)
    }

    /// Closes site `i`'s store and opens it again from its directory: what a process that
    /// died and was started again sees.
    pub fn reopen(&mut self, i: usize) {
        drop(self.sites.remove(i));
        let r = Replica::open(self.open_at(&self.dirs[i]), env_arc(&self.env)).unwrap();
        self.sites.insert(i, r);
    }

    /// Backs up site `i` with the store's own tool, while it stays in use.
    pub fn backup(&self, i: usize) -> Backup {
        let dir = self.fresh_path(&format!("backup-{}", self.names[i]));
        self.sites[i]
            .store()
            .backup(&dir)
            .unwrap_or_else(|e| panic!("backup of {}: {e}", self.names[i]));
        Backup(dir)
    }

    /// Replaces site `i` by a copy of `backup` in a new directory (the old store is dropped:
    /// the site lost its disk), without marking it restored: a file-system copy put back.
    pub fn snapshot_rollback(&mut self, i: usize, backup: &Backup) {
        let dir = self.fresh_path(&format!("restored-{}", self.names[i]));
        F::Store::restore_backup(&backup.0, &dir)
            .unwrap_or_else(|e| panic!("restore of {}: {e}", backup.0.display()));
        self.sites[i] = Replica::open(self.open_at(&dir), env_arc(&self.env)).unwrap();
        self.dirs[i] = dir;
    }

    /// Replaces site `i` by its `backup` and marks it restored (what `msite restore` does).
    pub fn restore(&mut self, i: usize, backup: &Backup) {
        self.snapshot_rollback(i, backup);
        self.sites[i].mark_restored().unwrap();
    }

    /// The id of site `i`.
    pub fn id(&self, i: usize) -> ReplicaId {
        self.sites[i].id()
    }

    /// Exports from `a` for `b`; the packet's parts, if any.
    pub fn export(&self, a: usize, b: usize) -> Option<Vec<Vec<u8>>> {
        self.sites[a].export_to_parts(&self.id(b), None).unwrap()
    }

    /// Imports a packet's parts at `b`.
    pub fn import(&self, b: usize, parts: Vec<Vec<u8>>) -> Result<ImportOutcome, CoreError> {
        let pkt = Incoming::from_parts(parts, "packet")?;
        self.sites[b].import(pkt)
    }

    /// Exports from `a` to `b` and imports it; returns the outcome (None: nothing sent).
    /// A packet refused as stale (built before the target's restore was known) is dropped, as
    /// an operator would; any other refusal fails the test.
    pub fn sync(&self, a: usize, b: usize) -> Option<ImportOutcome> {
        let parts = self.export(a, b)?;
        match self.import(b, parts) {
            Ok(o) => Some(o),
            Err(CoreError::Refused(crate::Refusal::StaleTarget { .. })) => {
                Some(ImportOutcome::AlreadyApplied)
            }
            Err(e) => panic!(
                "import at {} of a packet from {} failed: {e}",
                self.names[b], self.names[a]
            ),
        }
    }

    /// Exchanges both ways along `edges` until nothing moves.
    pub fn settle(&self, edges: &[(usize, usize)]) {
        for _ in 0..50 {
            let mut moved = false;
            for &(a, b) in edges {
                moved |= self.sync(a, b).is_some();
                moved |= self.sync(b, a).is_some();
            }
            if !moved {
                return;
            }
        }
        panic!("the family did not settle in 50 rounds");
    }

    /// Every site's state digest.
    pub fn digests(&self) -> Vec<[u8; 32]> {
        self.sites.iter().map(|s| s.digest().unwrap()).collect()
    }

    /// Every site holds the same own row and the same digest.
    pub fn assert_converged(&self) {
        let d = self.digests();
        let rows: Vec<_> = self.sites.iter().map(|s| s.own_row().unwrap()).collect();
        for i in 1..d.len() {
            assert_eq!(
                rows[0], rows[i],
                "own rows differ between r0 and {}",
                self.names[i]
            );
            assert_eq!(
                d[0], d[i],
                "digests differ between r0 and {}",
                self.names[i]
            );
        }
    }
}

/// Every pair of sites.
pub fn mesh(n: usize) -> Vec<(usize, usize)> {
    let mut e = Vec::new();
    for a in 0..n {
        for b in a + 1..n {
            e.push((a, b));
        }
    }
    e
}

/// Site 0 linked to every other.
pub fn hub(n: usize) -> Vec<(usize, usize)> {
    (1..n).map(|i| (0, i)).collect()
}

/// Site i linked to site i + 1.
pub fn chain(n: usize) -> Vec<(usize, usize)> {
    (1..n).map(|i| (i - 1, i)).collect()
}

/// Checks the "no reuse" invariant across sites: every (origin, number) names one entry.
pub fn assert_no_reuse<F: StoreFactory>(f: &Family<'_, F>) {
    let mut seen: HashMap<(ReplicaId, u64), [u8; 32]> = HashMap::new();
    for s in &f.sites {
        for (origin, _) in s.own_row().unwrap().0 {
            for e in s.entries_of(&origin).unwrap() {
                if let Some(h) = seen.insert((e.origin, e.number), e.hash) {
                    assert_eq!(
                        h, e.hash,
                        "entry {} of {:?} differs between sites",
                        e.number, e.origin
                    );
                }
            }
        }
    }
}

/// Whether an import applied entries.
pub fn applied(o: &ImportOutcome) -> bool {
    matches!(o, ImportOutcome::Applied { .. })
}

/// Stamps one `#[test]` per protocol scenario for a [`StoreFactory`]; see the
/// [module documentation](crate::testkit::scenarios).
#[macro_export]
macro_rules! protocol_scenario_tests {
    ($factory:expr) => {
        $crate::__protocol_scenario_cases! {
            $factory;
            hub_chain_and_mesh_converge => case_hub_chain_and_mesh_converge,
            big_version_replicates_with_equal_digests => case_big_version_replicates_with_equal_digests,
            content_over_the_receivers_limit_is_refused => case_content_over_the_receivers_limit_is_refused,
            big_blob_record_of_format_1_0_imports => case_big_blob_record_of_format_1_0_imports,
            delta_shipped_when_the_target_holds_the_base => case_delta_shipped_when_the_target_holds_the_base,
            content_goes_whole_when_the_base_is_not_known_held => case_content_goes_whole_when_the_base_is_not_known_held,
            delta_with_a_missing_base_or_corrupt_frame_is_refused => case_delta_with_a_missing_base_or_corrupt_frame_is_refused,
            packet_to_a_restoring_replica_carries_whole_content => case_packet_to_a_restoring_replica_carries_whole_content,
            waiting_packet_names_what_it_needs_then_applies => case_waiting_packet_names_what_it_needs_then_applies,
            lost_packet_is_resent_without_an_operator => case_lost_packet_is_resent_without_an_operator,
            settled_exchange_sends_nothing => case_settled_exchange_sends_nothing,
            exports_between_two_replies_send_no_resend_storm => case_exports_between_two_replies_send_no_resend_storm,
            a_reported_gap_is_resent_at_once => case_a_reported_gap_is_resent_at_once,
            duplicated_and_reordered_packets_are_harmless => case_duplicated_and_reordered_packets_are_harmless,
            local_change_on_an_object_mastered_elsewhere_is_refused => case_local_change_on_an_object_mastered_elsewhere_is_refused,
            mastership_moves_back_and_forth_by_request_and_grant => case_mastership_moves_back_and_forth_by_request_and_grant,
            concurrent_same_name_types_resolve_the_same_everywhere => case_concurrent_same_name_types_resolve_the_same_everywhere,
            foreign_and_misaddressed_packets_are_refused => case_foreign_and_misaddressed_packets_are_refused,
            corrupted_packet_is_refused_and_changes_nothing => case_corrupted_packet_is_refused_and_changes_nothing,
            replica_created_from_a_non_first_replica_joins => case_replica_created_from_a_non_first_replica_joins,
            import_tree_versions_only_what_changed => case_import_tree_versions_only_what_changed,
            restore_recovers_own_entries_sent_before_the_failure => case_restore_recovers_own_entries_sent_before_the_failure,
            packet_built_before_the_restore_is_refused_naming_both_incarnations => case_packet_built_before_the_restore_is_refused_naming_both_incarnations,
            snapshot_rollback_is_caught_before_a_number_is_reused => case_snapshot_rollback_is_caught_before_a_number_is_reused,
            snapshot_rollback_that_writes_first_is_refused_as_divergent_by_the_sibling => case_snapshot_rollback_that_writes_first_is_refused_as_divergent_by_the_sibling,
            rolled_back_site_that_numbered_again_locks_itself_at_a_base => case_rolled_back_site_that_numbered_again_locks_itself_at_a_base,
            rolled_back_site_that_numbered_again_locks_itself_on_a_relayed_entry => case_rolled_back_site_that_numbered_again_locks_itself_on_a_relayed_entry,
            an_older_restore_request_relayed_by_a_third_replica_is_refused_as_stale => case_an_older_restore_request_relayed_by_a_third_replica_is_refused_as_stale,
            sibling_created_after_the_backup_joins_the_awaited_set => case_sibling_created_after_the_backup_joins_the_awaited_set,
            two_replicas_restoring_at_once_both_complete => case_two_replicas_restoring_at_once_both_complete,
            a_sibling_restored_after_acknowledging_answers_when_its_own_restoration_completes => case_a_sibling_restored_after_acknowledging_answers_when_its_own_restoration_completes,
            restoring_again_from_an_older_backup => case_restoring_again_from_an_older_backup,
            backup_older_than_the_last_restoration_gives_up_the_entries_it_retired => case_backup_older_than_the_last_restoration_gives_up_the_entries_it_retired,
            running_restorereplica_again_amends_the_set_and_keeps_the_incarnation => case_running_restorereplica_again_amends_the_set_and_keeps_the_incarnation,
            override_completes_at_once => case_override_completes_at_once,
            lost_duplicated_and_reordered_packets_during_recovery => case_lost_duplicated_and_reordered_packets_during_recovery,
            amending_after_some_siblings_answered_does_not_wait_for_them_again => case_amending_after_some_siblings_answered_does_not_wait_for_them_again,
            restoring_a_backup_taken_while_recovering_starts_a_new_incarnation => case_restoring_a_backup_taken_while_recovering_starts_a_new_incarnation,
            crash_at_any_write_of_the_procedure_resumes => case_crash_at_any_write_of_the_procedure_resumes,
            sibling_known_only_to_the_lost_store_is_awaited_when_named_by_id => case_sibling_known_only_to_the_lost_store_is_awaited_when_named_by_id,
            content_forged_with_hashes_recomputed_is_refused => case_content_forged_with_hashes_recomputed_is_refused,
            forged_acknowledgement_is_refused => case_forged_acknowledgement_is_refused,
            relayed_entry_altered_by_the_hub_is_refused => case_relayed_entry_altered_by_the_hub_is_refused,
            packet_signed_by_an_unknown_key_is_refused => case_packet_signed_by_an_unknown_key_is_refused,
            key_swapped_in_the_creation_packet_is_refused => case_key_swapped_in_the_creation_packet_is_refused,
            relayed_restore_request_altered_by_the_hub_is_refused => case_relayed_restore_request_altered_by_the_hub_is_refused,
            replayed_old_signed_packet_changes_nothing => case_replayed_old_signed_packet_changes_nothing,
            packet_signed_by_a_rotated_key_is_refused => case_packet_signed_by_a_rotated_key_is_refused,
            packet_signed_before_a_rotation_applies_after_it => case_packet_signed_before_a_rotation_applies_after_it,
            packet_signed_with_a_new_key_waits_for_the_rotation => case_packet_signed_with_a_new_key_waits_for_the_rotation,
            forged_rotation_is_refused => case_forged_rotation_is_refused,
            restored_replica_whose_rotation_never_left_it_recovers => case_restored_replica_whose_rotation_never_left_it_recovers,
            restore_from_a_backup_older_than_a_rekey_takes_everything_back => case_restore_from_a_backup_older_than_a_rekey_takes_everything_back,
            lost_key_is_vouched_for_by_a_sibling => case_lost_key_is_vouched_for_by_a_sibling,
            rotated_keys_reach_a_replica_made_later => case_rotated_keys_reach_a_replica_made_later,
            scrub_keeps_the_digest_and_later_entries_chain_on => case_scrub_keeps_the_digest_and_later_entries_chain_on,
            scrub_keeps_what_a_sibling_or_the_window_still_needs => case_scrub_keeps_what_a_sibling_or_the_window_still_needs,
            restore_from_a_backup_within_the_window_recovers => case_restore_from_a_backup_within_the_window_recovers,
            restore_from_a_backup_older_than_the_window_is_refused_on_both_sides => case_restore_from_a_backup_older_than_the_window_is_refused_on_both_sides,
            sibling_put_back_behind_retention_is_refused_on_both_sides => case_sibling_put_back_behind_retention_is_refused_on_both_sides,
            a_resend_from_below_the_chain_base_is_skipped => case_a_resend_from_below_the_chain_base_is_skipped,
            retired_replica_is_not_awaited_by_a_later_restoration => case_retired_replica_is_not_awaited_by_a_later_restoration,
            retention_scrubs_past_a_retired_replicas_old_acknowledgement => case_retention_scrubs_past_a_retired_replicas_old_acknowledgement,
            chmaster_all_from_needs_the_retirement_and_replicates => case_chmaster_all_from_needs_the_retirement_and_replicates,
            mastership_is_not_handed_to_a_retired_replica => case_mastership_is_not_handed_to_a_retired_replica,
            packets_from_a_retired_replica_are_refused_with_state_unchanged => case_packets_from_a_retired_replica_are_refused_with_state_unchanged,
            a_replica_retires_itself_once_it_masters_nothing => case_a_replica_retires_itself_once_it_masters_nothing,
            a_denied_mastership_request_is_reported_to_the_requester => case_a_denied_mastership_request_is_reported_to_the_requester,
            a_retired_replicas_restore_request_is_no_longer_propagated => case_a_retired_replicas_restore_request_is_no_longer_propagated,
            a_self_retired_replica_does_not_acknowledge_a_restore_request => case_a_self_retired_replica_does_not_acknowledge_a_restore_request,
            fork_repair_keeps_timeline_a => case_fork_repair_keeps_timeline_a,
            fork_repair_keeps_timeline_b => case_fork_repair_keeps_timeline_b,
            fork_repair_keeps_the_given_up_content => case_fork_repair_keeps_the_given_up_content,
            fork_repair_decision_is_relayed_through_a_hub => case_fork_repair_decision_is_relayed_through_a_hub,
            fork_decision_altered_or_made_up_by_a_relay_is_refused => case_fork_decision_altered_or_made_up_by_a_relay_is_refused,
            fork_repair_accepts_the_packet_refused_before => case_fork_repair_accepts_the_packet_refused_before,
            fork_repair_unblocks_restorereplica_after_an_own_fork => case_fork_repair_unblocks_restorereplica_after_an_own_fork,
            fork_repair_at_a_snapshot_replica_above_its_base => case_fork_repair_at_a_snapshot_replica_above_its_base,
            fork_repair_at_a_snapshot_replica_within_its_base => case_fork_repair_at_a_snapshot_replica_within_its_base,
            fork_repair_above_a_snapshot_base_of_an_earlier_release => case_fork_repair_above_a_snapshot_base_of_an_earlier_release,
            fork_repair_below_a_snapshot_replicas_chain_base => case_fork_repair_below_a_snapshot_replicas_chain_base,
            fork_repair_at_a_snapshot_replica_with_the_whole_oplog => case_fork_repair_at_a_snapshot_replica_with_the_whole_oplog,
            direct_export_after_a_restoration_sends_only_what_is_new => case_direct_export_after_a_restoration_sends_only_what_is_new,
            a_report_the_relay_made_up_raises_no_estimate => case_a_report_the_relay_made_up_raises_no_estimate,
            snapshot_replica_is_indistinguishable_from_a_history_one => case_snapshot_replica_is_indistinguishable_from_a_history_one,
            replicas_made_one_after_another_carry_only_recent_entries => case_replicas_made_one_after_another_carry_only_recent_entries,
            mastership_moves_to_and_from_a_snapshot_replica => case_mastership_moves_to_and_from_a_snapshot_replica,
            snapshot_replica_restores_from_its_backup => case_snapshot_replica_restores_from_its_backup,
            sibling_older_than_the_snapshot_is_served_or_refused => case_sibling_older_than_the_snapshot_is_served_or_refused,
            snapshot_after_scrub => case_snapshot_after_scrub,
            creator_restored_after_a_snapshot_gets_its_entries_back => case_creator_restored_after_a_snapshot_gets_its_entries_back,
            damaged_snapshot_is_refused_and_the_store_says_so => case_damaged_snapshot_is_refused_and_the_store_says_so,
            // trust2 (issue #20, rest)
            new_replica_key_is_known_before_its_first_packet => case_new_replica_key_is_known_before_its_first_packet,
            new_replica_key_swapped_in_the_creation_packet_is_refused => case_new_replica_key_swapped_in_the_creation_packet_is_refused,
            new_replica_is_introduced_by_its_creators_signed_entry => case_new_replica_is_introduced_by_its_creators_signed_entry,
            recipients_are_replicated_through_relays => case_recipients_are_replicated_through_relays,
            recipient_altered_by_a_relay_is_not_taken => case_recipient_altered_by_a_relay_is_not_taken,
            seal_policy_converges_to_the_latest_setting => case_seal_policy_converges_to_the_latest_setting,
        }
    };
}

/// The expansion of [`protocol_scenario_tests!`]; not for direct use.
#[doc(hidden)]
#[macro_export]
macro_rules! __protocol_scenario_cases {
    ($factory:expr; $($name:ident => $case:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                $crate::testkit::scenarios::$case(&$factory);
            }
        )*
    };
}
