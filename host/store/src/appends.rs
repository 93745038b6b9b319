//! Rows a transaction only appends: written at its commit, never read back or pointed at
//! inside it (event-log and audit rows, a payment given to [`crate::payments::insert_at_commit`]).

use futures::future::BoxFuture;
use hephaestus_core::event::NewEvent;
use sqlx::{PgConnection, Postgres, QueryBuilder};

use crate::audit::{self, AuditEntry};
use crate::batch::Batchable;
use crate::events;
use crate::payments::{self, NewPayment};

#[derive(Debug, Default)]
pub(crate) struct Appends {
    pub(crate) payments: Vec<NewPayment>,
    pub(crate) events: Vec<NewEvent>,
    pub(crate) audit: Vec<AuditEntry>,
    /// Gateway attempts this transaction settles, deleted with its rows.
    pub(crate) attempts_done: Vec<String>,
}

/// How much a transaction had buffered at some point, to undo a failed job's share.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mark {
    payments: usize,
    events: usize,
    audit: usize,
    attempts_done: usize,
}

impl Appends {
    pub(crate) fn rows(&self) -> usize {
        self.payments.len() + self.events.len() + self.audit.len() + self.attempts_done.len()
    }

    pub(crate) fn mark(&self) -> Mark {
        Mark {
            payments: self.payments.len(),
            events: self.events.len(),
            audit: self.audit.len(),
            attempts_done: self.attempts_done.len(),
        }
    }

    /// The payments buffered since `mark`, taken out of the buffer.
    pub(crate) fn take_payments_since(&mut self, mark: Mark) -> Vec<NewPayment> {
        self.payments
            .split_off(mark.payments.min(self.payments.len()))
    }

    pub(crate) fn discard_since(&mut self, mark: Mark) {
        self.payments.truncate(mark.payments);
        self.events.truncate(mark.events);
        self.audit.truncate(mark.audit);
        self.attempts_done.truncate(mark.attempts_done);
    }

    /// The appends of every part as one PostgreSQL statement, `None` when there are none.
    pub(crate) fn pg_statement(parts: &[Appends]) -> Option<QueryBuilder<Postgres>> {
        let payments = parts.iter().flat_map(|a| &a.payments);
        let events = parts.iter().flat_map(|a| &a.events);
        let entries = parts.iter().flat_map(|a| &a.audit);
        let settled = parts.iter().flat_map(|a| &a.attempts_done);
        let counts = [
            payments.clone().count(),
            events.clone().count(),
            entries.clone().count(),
            settled.clone().count(),
        ];
        let total = counts.iter().filter(|n| **n > 0).count();
        if total == 0 {
            return None;
        }
        // PostgreSQL runs every data-modifying WITH exactly once, whether or not the outer
        // statement reads it, and in one snapshot: the rows land together or not at all.
        let mut q = QueryBuilder::<Postgres>::new("");
        let mut done = 0;
        let mut part = |q: &mut QueryBuilder<Postgres>,
                        push: &dyn Fn(&mut QueryBuilder<Postgres>)| {
            let inner = done + 1 < total;
            if inner {
                q.push(if done == 0 { "WITH " } else { ", " });
                q.push(format!("a{done} AS ("));
            }
            push(q);
            if inner {
                q.push(") ");
            }
            done += 1;
        };
        if counts[0] > 0 {
            part(&mut q, &|q| payments::push_insert(q, payments.clone()));
        }
        if counts[1] > 0 {
            part(&mut q, &|q| events::push_insert(q, events.clone()));
        }
        if counts[2] > 0 {
            part(&mut q, &|q| audit::push_insert(q, entries.clone()));
        }
        if counts[3] > 0 {
            part(&mut q, &|q| {
                crate::attempts::push_delete(q, settled.clone())
            });
        }
        Some(q)
    }
}

/// The appends of transactions that sent nothing else: each is the whole of its
/// transaction, so many of them share one statement (see [`crate::batch`]).
impl Batchable for Appends {
    type Out = ();

    fn run<'c>(
        conn: &'c mut PgConnection,
        jobs: &'c [Self],
    ) -> BoxFuture<'c, Result<Vec<()>, sqlx::Error>> {
        Box::pin(async move {
            if let Some(mut q) = Appends::pg_statement(jobs) {
                q.build().execute(&mut *conn).await?;
            }
            Ok(vec![(); jobs.len()])
        })
    }

    fn weight(&self) -> usize {
        self.rows()
    }
}
