//! The payment-order state machine, as pure functions.
//!
//! An order's status is never stored by guesswork: it is recomputed from the order's terms, the
//! payments seen for it (with their confirmations) and the clock, by [`evaluate`]. The watcher,
//! the expirer and a reorg all call the same function, so they cannot disagree.
//!
//! ```text
//!  pending ──payment seen (≥ amount − tolerance)──▶ processing ──N confirmations──▶ confirmed
//!     │  ▲                                             │  ▲
//!     │  └──────────── reorg drops the payment ────────┘  │
//!     └──expires_at passes──▶ expired ──late payment in monitoring window──┘
//! ```
//!
//! `failed` is reserved for orders a merchant or operator closes; payments never produce it.

use std::fmt;
use std::str::FromStr;

use crate::Amount;

/// The status CryptoPay-style APIs show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OrderStatus {
    /// Waiting for payment.
    Pending,
    /// Enough was paid, waiting for confirmations.
    Processing,
    /// Paid and confirmed.
    Confirmed,
    /// The payment window passed without enough payment.
    Expired,
    /// Closed without payment.
    Failed,
}

impl OrderStatus {
    /// The wire name (`pending`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Pending => "pending",
            OrderStatus::Processing => "processing",
            OrderStatus::Confirmed => "confirmed",
            OrderStatus::Expired => "expired",
            OrderStatus::Failed => "failed",
        }
    }

    /// Every status, in lifecycle order.
    pub const ALL: [OrderStatus; 5] = [
        OrderStatus::Pending,
        OrderStatus::Processing,
        OrderStatus::Confirmed,
        OrderStatus::Expired,
        OrderStatus::Failed,
    ];
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status name that is not one of the five.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("status must be one of pending, processing, confirmed, expired, failed")]
pub struct UnknownStatus;

impl FromStr for OrderStatus {
    type Err = UnknownStatus;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        OrderStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == text)
            .ok_or(UnknownStatus)
    }
}

/// How the amount paid relates to the amount asked, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PaymentSubStatus {
    /// Nothing unusual (including nothing paid yet).
    None,
    /// Less than asked (within tolerance if the order still completed).
    Underpaid,
    /// More than asked.
    Overpaid,
    /// Paid after `expires_at`, inside the monitoring window.
    PaidLate,
}

impl PaymentSubStatus {
    /// The wire name, or `None` for [`PaymentSubStatus::None`].
    pub fn as_str(self) -> Option<&'static str> {
        match self {
            PaymentSubStatus::None => None,
            PaymentSubStatus::Underpaid => Some("underpaid"),
            PaymentSubStatus::Overpaid => Some("overpaid"),
            PaymentSubStatus::PaidLate => Some("paid_late"),
        }
    }

    /// Parses a stored value (`None` for an absent one).
    ///
    /// # Errors
    /// [`UnknownStatus`] for any other text.
    pub fn parse(text: Option<&str>) -> Result<Self, UnknownStatus> {
        match text {
            None => Ok(PaymentSubStatus::None),
            Some("underpaid") => Ok(PaymentSubStatus::Underpaid),
            Some("overpaid") => Ok(PaymentSubStatus::Overpaid),
            Some("paid_late") => Ok(PaymentSubStatus::PaidLate),
            Some(_) => Err(UnknownStatus),
        }
    }
}

/// What an order asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderTerms {
    /// The amount asked, in base units.
    pub amount: Amount,
    /// How much less than `amount` still completes the order.
    pub underpayment_tolerance: Amount,
    /// When the payment window closes (unix seconds).
    pub expires_at: i64,
    /// When Coffer stops crediting late payments (unix seconds).
    pub monitor_until: i64,
    /// Set when a person closed the order; it then stays `failed`.
    pub closed: bool,
}

/// A payment as the state machine needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PaymentFacts {
    /// Amount in base units.
    pub amount: Amount,
    /// Confirmations so far (1 when in the latest block).
    pub confirmations: u64,
    /// When its block was mined (unix seconds).
    pub block_time: i64,
}

/// The result of [`evaluate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Evaluation {
    /// The status.
    pub status: OrderStatus,
    /// The sub-status.
    pub sub_status: PaymentSubStatus,
    /// Sum of the payments that count (not orphaned, inside the window).
    pub amount_paid: Amount,
}

/// Computes an order's status from its terms, its live (non-orphaned) payments and the time.
///
/// Payments mined after `monitor_until` are ignored. The order is `confirmed` once payments
/// with at least `required_confirmations` add up to `amount − tolerance`, `processing` once all
/// seen payments do, `expired` after `expires_at` otherwise, else `pending`.
pub fn evaluate(
    terms: &OrderTerms,
    payments: &[PaymentFacts],
    required_confirmations: u64,
    now: i64,
) -> Evaluation {
    let counted = payments
        .iter()
        .filter(|payment| payment.block_time <= terms.monitor_until);
    let mut seen = Amount::ZERO;
    let mut confirmed = Amount::ZERO;
    let mut late = false;
    for payment in counted {
        seen = seen.checked_add(payment.amount).unwrap_or(seen);
        if payment.confirmations >= required_confirmations.max(1) {
            confirmed = confirmed.checked_add(payment.amount).unwrap_or(confirmed);
        }
        late |= payment.block_time > terms.expires_at;
    }
    let threshold = terms
        .amount
        .checked_sub(terms.underpayment_tolerance)
        .unwrap_or(Amount::ZERO);
    let enough = |paid: Amount| !paid.is_zero() && paid >= threshold;
    let status = if terms.closed && !enough(seen) {
        OrderStatus::Failed
    } else if enough(confirmed) {
        OrderStatus::Confirmed
    } else if enough(seen) {
        OrderStatus::Processing
    } else if now >= terms.expires_at {
        OrderStatus::Expired
    } else {
        OrderStatus::Pending
    };
    let sub_status = if seen.is_zero() {
        PaymentSubStatus::None
    } else if late && enough(seen) {
        PaymentSubStatus::PaidLate
    } else if seen > terms.amount {
        PaymentSubStatus::Overpaid
    } else if seen < terms.amount {
        PaymentSubStatus::Underpaid
    } else {
        PaymentSubStatus::None
    };
    Evaluation {
        status,
        sub_status,
        amount_paid: seen,
    }
}

/// The status of a sale: an order paid through x402 to a payee shared by many orders (an x402
/// sale or a Pelago order). Its payment was checked against the price when it was recorded,
/// and it is not watched by address, so no payment window or monitoring period applies to it:
/// every live payment counts, and the status follows their confirmations — `confirmed` at the
/// chain's setting, `processing` before, and back to `pending` (`expired` once its window has
/// passed) when a reorg drops the payment.
pub fn evaluate_sale(
    terms: &OrderTerms,
    payments: &[PaymentFacts],
    required_confirmations: u64,
    now: i64,
) -> Evaluation {
    let unbounded = OrderTerms {
        expires_at: i64::MAX,
        monitor_until: i64::MAX,
        ..*terms
    };
    let mut evaluation = evaluate(&unbounded, payments, required_confirmations, now);
    if evaluation.status == OrderStatus::Pending && now >= terms.expires_at {
        evaluation.status = OrderStatus::Expired;
    }
    evaluation
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPIRES: i64 = 1_000;

    fn terms(amount: u64) -> OrderTerms {
        OrderTerms {
            amount: Amount::from(amount),
            underpayment_tolerance: Amount::ZERO,
            expires_at: EXPIRES,
            monitor_until: EXPIRES + 86_400,
            closed: false,
        }
    }

    fn paid(amount: u64, confirmations: u64, block_time: i64) -> PaymentFacts {
        PaymentFacts {
            amount: Amount::from(amount),
            confirmations,
            block_time,
        }
    }

    fn status(
        terms: &OrderTerms,
        payments: &[PaymentFacts],
        now: i64,
    ) -> (OrderStatus, PaymentSubStatus, Amount) {
        let e = evaluate(terms, payments, 2, now);
        (e.status, e.sub_status, e.amount_paid)
    }

    #[test]
    fn an_exact_payment_moves_through_processing_to_confirmed() {
        let order = terms(100);
        assert_eq!(status(&order, &[], 10).0, OrderStatus::Pending);
        assert_eq!(
            status(&order, &[paid(100, 1, 10)], 10),
            (
                OrderStatus::Processing,
                PaymentSubStatus::None,
                Amount::from(100)
            )
        );
        assert_eq!(
            status(&order, &[paid(100, 2, 10)], 20),
            (
                OrderStatus::Confirmed,
                PaymentSubStatus::None,
                Amount::from(100)
            )
        );
    }

    #[test]
    fn underpayment_waits_and_then_expires_as_underpaid() {
        let order = terms(100);
        assert_eq!(
            status(&order, &[paid(60, 5, 10)], 10),
            (
                OrderStatus::Pending,
                PaymentSubStatus::Underpaid,
                Amount::from(60)
            )
        );
        assert_eq!(
            status(&order, &[paid(60, 5, 10)], EXPIRES),
            (
                OrderStatus::Expired,
                PaymentSubStatus::Underpaid,
                Amount::from(60)
            )
        );
    }

    #[test]
    fn a_tolerance_lets_a_small_underpayment_complete() {
        let order = OrderTerms {
            underpayment_tolerance: Amount::from(5),
            ..terms(100)
        };
        assert_eq!(
            status(&order, &[paid(96, 2, 10)], 10),
            (
                OrderStatus::Confirmed,
                PaymentSubStatus::Underpaid,
                Amount::from(96)
            )
        );
        assert_eq!(
            status(&order, &[paid(94, 2, 10)], 10).0,
            OrderStatus::Pending
        );
    }

    #[test]
    fn two_payments_add_up_and_confirm_when_both_are_deep_enough() {
        let order = terms(100);
        let payments = [paid(40, 3, 10), paid(60, 1, 11)];
        assert_eq!(status(&order, &payments, 12).0, OrderStatus::Processing);
        let payments = [paid(40, 3, 10), paid(60, 2, 11)];
        assert_eq!(
            status(&order, &payments, 12),
            (
                OrderStatus::Confirmed,
                PaymentSubStatus::None,
                Amount::from(100)
            )
        );
    }

    #[test]
    fn overpayment_confirms_and_is_flagged() {
        assert_eq!(
            status(&terms(100), &[paid(150, 2, 10)], 10),
            (
                OrderStatus::Confirmed,
                PaymentSubStatus::Overpaid,
                Amount::from(150)
            )
        );
    }

    #[test]
    fn a_late_payment_inside_the_window_revives_an_expired_order() {
        let order = terms(100);
        assert_eq!(status(&order, &[], EXPIRES + 5).0, OrderStatus::Expired);
        assert_eq!(
            status(&order, &[paid(100, 2, EXPIRES + 5)], EXPIRES + 10),
            (
                OrderStatus::Confirmed,
                PaymentSubStatus::PaidLate,
                Amount::from(100)
            )
        );
        let after_window = order.monitor_until + 1;
        assert_eq!(
            status(&order, &[paid(100, 2, after_window)], after_window + 10),
            (OrderStatus::Expired, PaymentSubStatus::None, Amount::ZERO)
        );
    }

    #[test]
    fn losing_the_payment_to_a_reorg_moves_the_order_back() {
        let order = terms(100);
        assert_eq!(
            status(&order, &[paid(100, 1, 10)], 10).0,
            OrderStatus::Processing
        );
        assert_eq!(
            status(&order, &[], 10),
            (OrderStatus::Pending, PaymentSubStatus::None, Amount::ZERO)
        );
    }

    #[test]
    fn zero_confirmations_required_still_needs_the_block() {
        let e = evaluate(&terms(100), &[paid(100, 0, 10)], 0, 10);
        assert_eq!(e.status, OrderStatus::Processing);
    }

    #[test]
    fn statuses_round_trip_through_their_names() {
        for status in OrderStatus::ALL {
            assert_eq!(status.as_str().parse::<OrderStatus>(), Ok(status));
        }
        assert_eq!("paid".parse::<OrderStatus>(), Err(UnknownStatus));
        for sub in [
            PaymentSubStatus::None,
            PaymentSubStatus::Underpaid,
            PaymentSubStatus::Overpaid,
            PaymentSubStatus::PaidLate,
        ] {
            assert_eq!(PaymentSubStatus::parse(sub.as_str()), Ok(sub));
        }
    }

    #[test]
    fn a_sale_follows_its_payment_whenever_its_block_was_mined() {
        // A sale recorded the moment it was settled: its window closed at creation.
        let sale = OrderTerms {
            expires_at: EXPIRES,
            monitor_until: EXPIRES,
            ..terms(100)
        };
        let mined_after = EXPIRES + 5;
        let confirming = evaluate_sale(&sale, &[paid(100, 1, mined_after)], 3, EXPIRES + 10);
        assert_eq!(
            (confirming.status, confirming.sub_status),
            (OrderStatus::Processing, PaymentSubStatus::None),
            "not late, not dropped for being after the monitoring period"
        );
        let deep = evaluate_sale(&sale, &[paid(100, 3, mined_after)], 3, EXPIRES + 10);
        assert_eq!(deep.status, OrderStatus::Confirmed);
        assert_eq!(deep.amount_paid, Amount::from(100));
        // The payment's block left the chain: back to unpaid (the window has passed).
        let dropped = evaluate_sale(&sale, &[], 3, EXPIRES + 10);
        assert_eq!(dropped.status, OrderStatus::Expired);
        let open = OrderTerms {
            expires_at: EXPIRES + 100,
            ..sale
        };
        assert_eq!(
            evaluate_sale(&open, &[], 3, EXPIRES + 10).status,
            OrderStatus::Pending
        );
        // The plain evaluation would have ignored the payment: the bug this avoids.
        assert_eq!(
            evaluate(&sale, &[paid(100, 3, mined_after)], 3, EXPIRES + 10).status,
            OrderStatus::Expired
        );
    }
}
