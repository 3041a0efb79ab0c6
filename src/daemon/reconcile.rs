//! The pure parts of reconciling: how often the agent may commit, how long it waits after a
//! failure, how often it warns, and when someone is fighting it for the table. No I/O, no
//! clock: time comes in as an argument, so every rule here is unit-tested with made-up
//! instants. (Which reason readiness reports first is [`super::next`]'s.)

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use super::drift::Committer;

/// Commits allowed in one [`BUDGET_WINDOW`] before the agent slows down.
pub const BUDGET_COMMITS: usize = 20;
/// The window of the commit budget.
pub const BUDGET_WINDOW: Duration = Duration::from_secs(10);
/// Beyond the budget, at most one commit per this period.
pub const BUDGET_SLOW_PERIOD: Duration = Duration::from_secs(1);

/// One budget for every commit, whatever caused it (start-up, config, repair, full check,
/// retry): someone who keeps changing the table (a second agent, a tool) must not make the
/// agent spin, nor starve the rest of the node of CPU.
///
/// Up to [`BUDGET_COMMITS`] commits in any [`BUDGET_WINDOW`]; past that, one per
/// [`BUDGET_SLOW_PERIOD`].
#[derive(Debug, Clone, Default)]
pub struct Budget {
    recent: VecDeque<Instant>,
}

impl Budget {
    /// `Ok` if a commit may run at `now`, else the instant from which one may.
    pub fn admit(&mut self, now: Instant) -> Result<(), Instant> {
        while self
            .recent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > BUDGET_WINDOW)
        {
            self.recent.pop_front();
        }
        if self.recent.len() < BUDGET_COMMITS {
            return Ok(());
        }
        match self.recent.back() {
            Some(last) if now.saturating_duration_since(*last) < BUDGET_SLOW_PERIOD => {
                Err(*last + BUDGET_SLOW_PERIOD)
            }
            _ => Ok(()),
        }
    }

    /// Records a commit made at `now` (successful or not: both cost the kernel).
    pub fn spend(&mut self, now: Instant) {
        self.recent.push_back(now);
        // Only the window and the last commit matter; keep the queue bounded whatever the
        // clock does.
        while self.recent.len() > BUDGET_COMMITS * 2 {
            self.recent.pop_front();
        }
    }

    /// Gives back the last commit spent: it turned out to send nothing.
    pub fn refund(&mut self) {
        self.recent.pop_back();
    }

    /// Commits made in the current window.
    pub fn spent(&self) -> usize {
        self.recent.len()
    }
}

/// The first wait after a failed commit.
pub const BACKOFF_MIN: Duration = Duration::from_millis(500);
/// The longest wait between retries.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Exponential backoff for retrying a failed commit.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: BACKOFF_MIN }
    }
}

impl Backoff {
    /// The wait after another failure; each failure doubles the next one, up to the maximum.
    pub fn failed(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        wait
    }

    /// A commit succeeded: the next failure waits the minimum again.
    pub fn succeeded(&mut self) {
        self.next = BACKOFF_MIN;
    }
}

/// How many warnings of one kind are logged per [`LOG_WINDOW`] before they are counted
/// instead.
pub const LOG_BURST: usize = 5;
/// The window of the log limit.
pub const LOG_WINDOW: Duration = Duration::from_secs(10);

/// Rate limit for a repeated warning (a tamper storm would write hundreds a second): at
/// most [`LOG_BURST`] per [`LOG_WINDOW`], then a count of what was suppressed when the next
/// one is logged.
#[derive(Debug, Clone, Default)]
pub struct LogLimit {
    window_start: Option<Instant>,
    logged: usize,
    suppressed: usize,
}

impl LogLimit {
    /// `Some(n)` to log now, `n` being how many were suppressed since the last one logged;
    /// `None` to suppress this one.
    pub fn admit(&mut self, now: Instant) -> Option<usize> {
        let new_window = self
            .window_start
            .is_none_or(|s| now.saturating_duration_since(s) >= LOG_WINDOW);
        if new_window {
            self.window_start = Some(now);
            self.logged = 0;
        }
        if self.logged < LOG_BURST {
            self.logged += 1;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

/// Repairs in [`FIGHT_WINDOW`] that mean someone is fighting us for the table.
pub const FIGHT_REPAIRS: usize = 5;
/// The window of fight detection.
pub const FIGHT_WINDOW: Duration = Duration::from_secs(10);
/// Quiet time after which a fight is over.
pub const FIGHT_CALM: Duration = Duration::from_secs(30);

/// Notices another committer that keeps undoing our table (a second agent with ownership
/// off, a tool): repairs alone cannot win that, so the agent says so and stops calling
/// itself ready.
#[derive(Debug, Clone, Default)]
pub struct FightWatch {
    repairs: VecDeque<Instant>,
    last_opponent: Option<Committer>,
}

impl FightWatch {
    /// Records a repair of a change made by `opponent`.
    pub fn repaired(&mut self, now: Instant, opponent: Committer) {
        self.repairs.push_back(now);
        while self.repairs.len() > FIGHT_REPAIRS * 4 {
            self.repairs.pop_front();
        }
        self.last_opponent = Some(opponent);
    }

    /// The fight in progress at `now`, if any: [`FIGHT_REPAIRS`] repairs within
    /// [`FIGHT_WINDOW`], and the last less than [`FIGHT_CALM`] ago.
    pub fn fight(&self, now: Instant) -> Option<Fight> {
        let last = *self.repairs.back()?;
        if now.saturating_duration_since(last) >= FIGHT_CALM {
            return None;
        }
        let in_window = self
            .repairs
            .iter()
            .filter(|t| last.saturating_duration_since(**t) <= FIGHT_WINDOW)
            .count();
        (in_window >= FIGHT_REPAIRS).then(|| Fight {
            repairs: in_window,
            opponent: self.last_opponent.clone(),
        })
    }
}

/// A fight for the table: how many repairs within [`FIGHT_WINDOW`], and against whom last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fight {
    /// Repairs within the window.
    pub repairs: usize,
    /// Who made the change repaired last.
    pub opponent: Option<Committer>,
}

impl fmt::Display for Fight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "another committer keeps changing the table: {} repairs in {:?}, last against ",
            self.repairs, FIGHT_WINDOW
        )?;
        match &self.opponent {
            Some(who) => write!(f, "{who}"),
            None => f.write_str("?"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn budget_allows_a_burst_then_one_per_period() {
        let t0 = Instant::now();
        let mut b = Budget::default();
        for i in 0..BUDGET_COMMITS {
            let now = t0 + ms(i as u64);
            assert_eq!(b.admit(now), Ok(()), "commit {i}");
            b.spend(now);
        }
        let now = t0 + ms(50);
        let last = t0 + ms(BUDGET_COMMITS as u64 - 1);
        assert_eq!(b.admit(now), Err(last + BUDGET_SLOW_PERIOD));
        // A second later one more is allowed, and then the next second.
        let later = last + BUDGET_SLOW_PERIOD;
        assert_eq!(b.admit(later), Ok(()));
        b.spend(later);
        assert_eq!(b.admit(later + ms(10)), Err(later + BUDGET_SLOW_PERIOD));
    }

    #[test]
    fn budget_refills_after_the_window() {
        let t0 = Instant::now();
        let mut b = Budget::default();
        for _ in 0..BUDGET_COMMITS {
            b.spend(t0);
        }
        assert!(b.admit(t0 + ms(10)).is_err());
        let after = t0 + BUDGET_WINDOW + ms(1);
        assert_eq!(b.admit(after), Ok(()));
        assert_eq!(b.spent(), 0);
    }

    #[test]
    fn a_sustained_storm_is_held_to_a_bounded_rate() {
        // Someone changes the table every millisecond for a minute.
        let t0 = Instant::now();
        let mut b = Budget::default();
        let mut commits = 0;
        for i in 0..60_000 {
            let now = t0 + ms(i);
            if b.admit(now).is_ok() {
                b.spend(now);
                commits += 1;
            }
        }
        // A burst per window plus one per second: about 3 a second, never thousands.
        assert!(commits <= 6 * BUDGET_COMMITS + 60, "{commits} commits");
        assert!(commits >= 60, "{commits} commits");
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum_and_resets() {
        let mut b = Backoff::default();
        let waits: Vec<Duration> = (0..9).map(|_| b.failed()).collect();
        assert_eq!(waits[..4], [ms(500), ms(1000), ms(2000), ms(4000)]);
        assert_eq!(*waits.last().unwrap(), BACKOFF_MAX);
        b.succeeded();
        assert_eq!(b.failed(), BACKOFF_MIN);
    }

    #[test]
    fn a_warning_storm_is_limited_and_the_suppressed_counted() {
        let t0 = Instant::now();
        let mut l = LogLimit::default();
        let admitted: Vec<Option<usize>> = (0..8).map(|i| l.admit(t0 + ms(i))).collect();
        assert_eq!(admitted[..LOG_BURST], [Some(0); LOG_BURST]);
        assert!(admitted[LOG_BURST..].iter().all(Option::is_none));
        // The next window logs again and reports what it held back.
        assert_eq!(l.admit(t0 + LOG_WINDOW), Some(3));
        assert_eq!(l.admit(t0 + LOG_WINDOW + ms(1)), Some(0));
    }

    fn agent(port_id: u32) -> Committer {
        Committer {
            proc_name: Some("nft-masq-agent".into()),
            pid: Some(9),
            port_id,
        }
    }

    #[test]
    fn a_fight_is_noticed_and_ends_after_a_calm() {
        let t0 = Instant::now();
        let mut f = FightWatch::default();
        for i in 0..FIGHT_REPAIRS as u64 - 1 {
            f.repaired(t0 + ms(i * 100), agent(7));
        }
        assert_eq!(f.fight(t0 + ms(500)), None, "a few repairs are not a fight");
        f.repaired(t0 + ms(600), agent(7));
        let why = f.fight(t0 + ms(700)).unwrap().to_string();
        assert_eq!(
            why,
            "another committer keeps changing the table: 5 repairs in 10s, last against \
             nft-masq-agent (pid 9, netlink port 7)"
        );
        assert_eq!(f.fight(t0 + ms(600) + FIGHT_CALM), None);
        // Repairs spread out over minutes are no fight either.
        let mut slow = FightWatch::default();
        for i in 0..20 {
            slow.repaired(t0 + Duration::from_secs(i * 20), agent(8));
        }
        assert_eq!(slow.fight(t0 + Duration::from_secs(381)), None);
    }
}
