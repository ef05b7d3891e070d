//! Payment: accepts valid, unexpired Visa and MasterCard cards and answers a
//! UUID transaction id; refuses everything else as upstream does, with the
//! non-standard gRPC status 400 and upstream's messages.
//!
//! Only the last four digits of a card are ever kept or logged.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tonic::codegen::{BoxFuture, Context, Poll, Service, http};
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::server::NamedService;
use tonic::{Code, Request, Response, Status};

use super::Rpc;
use super::control::{Control, lock};
use crate::proto::hipstershop::payment_service_server::{PaymentService, PaymentServiceServer};
use crate::proto::hipstershop::{ChargeRequest, ChargeResponse, CreditCardInfo, Money};

/// The gRPC status number of a refused card. Not a standard code: clients
/// (tonic included) read it as `UNKNOWN`, with the message intact.
pub const REFUSAL_CODE: u16 = 400;

/// One Charge that went through.
#[derive(Debug, Clone, PartialEq)]
pub struct Charge {
    /// The amount asked for (default when the request had none).
    pub amount: Money,
    /// The last four digits of the card.
    pub card_last4: String,
    /// The transaction id answered.
    pub transaction_id: String,
}

/// One Charge that was refused (with [`REFUSAL_CODE`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    /// The amount asked for (default when the request had none).
    pub amount: Money,
    /// The last four digits of the card.
    pub card_last4: String,
    /// The message sent back.
    pub message: String,
}

/// The payment stand-in: read charges and refusals, decline every card.
#[derive(Debug, Clone, Default)]
pub struct PaymentStandIn {
    state: Arc<State>,
}

#[derive(Debug, Default)]
struct State {
    decline_all: AtomicBool,
    charges: Mutex<Vec<Charge>>,
    refusals: Mutex<Vec<Refusal>>,
}

impl PaymentStandIn {
    /// Every successful charge, in order: the money that moved.
    pub fn charges(&self) -> Vec<Charge> {
        lock(&self.state.charges).clone()
    }

    /// Every refused charge, in order.
    pub fn refusals(&self) -> Vec<Refusal> {
        lock(&self.state.refusals).clone()
    }

    /// While `decline` is true, even valid cards are refused.
    pub fn decline_all(&self, decline: bool) {
        self.state.decline_all.store(decline, Ordering::SeqCst);
    }

    pub(super) fn server(
        &self,
        control: Arc<Control>,
    ) -> RawStatus<PaymentServiceServer<PaymentServer>> {
        RawStatus(PaymentServiceServer::new(PaymentServer {
            state: Arc::clone(&self.state),
            control,
        }))
    }
}

/// The card's digits, without the spaces and dashes people type.
fn digits(number: &str) -> String {
    number.chars().filter(|c| !matches!(c, ' ' | '-')).collect()
}

/// The last four characters of the card number (fewer if it is shorter).
pub(super) fn last4(number: &str) -> String {
    let digits: Vec<char> = digits(number).chars().collect();
    digits[digits.len().saturating_sub(4)..].iter().collect()
}

fn luhn_valid(digits: &str) -> bool {
    let mut sum = 0;
    for (i, c) in digits.chars().rev().enumerate() {
        let Some(mut d) = c.to_digit(10) else {
            return false;
        };
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    !digits.is_empty() && sum % 10 == 0
}

/// The card brand by number prefix and length, named as upstream's card
/// validator names them; `None` for a number no brand issues.
fn brand(digits: &str) -> Option<&'static str> {
    let prefix = |n: usize| digits.get(..n).and_then(|p| p.parse::<u32>().ok());
    let len = digits.len();
    let in_range = |n, low, high| prefix(n).is_some_and(|p| (low..=high).contains(&p));
    if digits.starts_with('4') && matches!(len, 13 | 16 | 19) {
        Some("visa")
    } else if (in_range(2, 51, 55) || in_range(4, 2221, 2720)) && len == 16 {
        Some("mastercard")
    } else if (in_range(2, 34, 34) || in_range(2, 37, 37)) && len == 15 {
        Some("amex")
    } else if (in_range(3, 300, 305) || in_range(2, 36, 36) || in_range(2, 38, 39)) && len == 14 {
        Some("dinersclub")
    } else if (in_range(4, 6011, 6011) || in_range(2, 65, 65) || in_range(3, 644, 649)) && len == 16
    {
        Some("discover")
    } else if in_range(4, 3528, 3589) && len == 16 {
        Some("jcb")
    } else {
        None
    }
}

/// Upstream's checks, in upstream's order; `Err` is the refusal message.
/// `today` is `(year, month)`, month 1..=12.
pub(super) fn check_card(card: &CreditCardInfo, today: (i32, i32)) -> Result<&'static str, String> {
    let digits = digits(&card.credit_card_number);
    let Some(brand) = brand(&digits).filter(|_| luhn_valid(&digits)) else {
        return Err("Credit card info is invalid".to_owned());
    };
    if !matches!(brand, "visa" | "mastercard") {
        return Err(format!(
            "Sorry, we cannot process {brand} credit cards. Only VISA or MasterCard is accepted."
        ));
    }
    let (year, month) = (
        card.credit_card_expiration_year,
        card.credit_card_expiration_month,
    );
    // i64: the fields come from the caller and may be anything.
    let months = |y: i32, m: i32| i64::from(y) * 12 + i64::from(m);
    if months(today.0, today.1) > months(year, month) {
        return Err(format!(
            "Your credit card (ending {}) expired on {month}/{year}",
            last4(&card.credit_card_number)
        ));
    }
    Ok(brand)
}

/// A refusal as upstream sends it: status 400 on the wire (see [`RawStatus`]).
fn refusal(message: &str) -> Status {
    let mut metadata = MetadataMap::new();
    metadata.insert(RAW_STATUS_HEADER, MetadataValue::from(REFUSAL_CODE));
    Status::with_metadata(Code::Unknown, message, metadata)
}

/// The gRPC face of [`PaymentStandIn`].
#[derive(Debug)]
pub(super) struct PaymentServer {
    state: Arc<State>,
    control: Arc<Control>,
}

#[tonic::async_trait]
impl PaymentService for PaymentServer {
    async fn charge(
        &self,
        request: Request<ChargeRequest>,
    ) -> Result<Response<ChargeResponse>, Status> {
        self.control.enter(Rpc::Charge, request.metadata()).await?;
        let request = request.into_inner();
        let amount = request.amount.unwrap_or_default();
        let card = request.credit_card.unwrap_or_default();
        let card_last4 = last4(&card.credit_card_number);
        let now = time::OffsetDateTime::now_utc();
        let checked = check_card(&card, (now.year(), i32::from(u8::from(now.month()))));
        let result = match checked {
            Ok(_) if self.state.decline_all.load(Ordering::SeqCst) => Err(format!(
                "Your credit card (ending {card_last4}) was declined"
            )),
            other => other,
        };
        match result {
            Ok(brand) => {
                let transaction_id = uuid::Uuid::new_v4().to_string();
                tracing::info!(
                    "Transaction processed: {brand} ending {card_last4} Amount: {}{}.{}",
                    amount.currency_code,
                    amount.units,
                    amount.nanos
                );
                lock(&self.state.charges).push(Charge {
                    amount,
                    card_last4,
                    transaction_id: transaction_id.clone(),
                });
                Ok(Response::new(ChargeResponse { transaction_id }))
            }
            Err(message) => {
                let status = refusal(&message);
                lock(&self.state.refusals).push(Refusal {
                    amount,
                    card_last4,
                    message,
                });
                Err(status)
            }
        }
    }
}

/// Metadata that asks [`RawStatus`] to put a number tonic's `Code` cannot
/// express into `grpc-status`.
const RAW_STATUS_HEADER: &str = "x-standin-grpc-status";

/// Wraps a tonic service so that a [`RAW_STATUS_HEADER`] in an error
/// response replaces its `grpc-status`.
///
/// tonic writes an error returned by a handler as a headers-only response,
/// so rewriting the response headers is enough.
#[derive(Debug, Clone)]
pub(super) struct RawStatus<S>(S);

impl<S: NamedService> NamedService for RawStatus<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B, ResBody> Service<http::Request<B>> for RawStatus<S>
where
    S: Service<http::Request<B>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let response = self.0.call(request);
        Box::pin(async move {
            let mut response = response.await?;
            let headers = response.headers_mut();
            if let Some(raw) = headers.remove(RAW_STATUS_HEADER) {
                headers.insert("grpc-status", raw);
            }
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card(number: &str, year: i32, month: i32) -> CreditCardInfo {
        CreditCardInfo {
            credit_card_number: number.to_owned(),
            credit_card_cvv: 123,
            credit_card_expiration_year: year,
            credit_card_expiration_month: month,
        }
    }

    const TODAY: (i32, i32) = (2026, 5);

    #[test]
    fn accepts_visa_and_mastercard() {
        // The frontend's default card, with its dashes.
        assert_eq!(
            check_card(&card("4432-8015-6152-0454", 2030, 1), TODAY),
            Ok("visa")
        );
        assert_eq!(
            check_card(&card("5555555555554444", 2026, 5), TODAY),
            Ok("mastercard")
        );
        assert_eq!(
            check_card(&card("2223003122003222", 2027, 1), TODAY),
            Ok("mastercard")
        );
    }

    #[test]
    fn refuses_like_upstream() {
        let invalid = Err("Credit card info is invalid".to_owned());
        assert_eq!(
            check_card(&card("4432801561520455", 2030, 1), TODAY),
            invalid
        );
        assert_eq!(check_card(&card("", 2030, 1), TODAY), invalid);
        assert_eq!(
            check_card(&card("4432x01561520454", 2030, 1), TODAY),
            invalid
        );
        assert_eq!(
            check_card(&card("378282246310005", 2030, 1), TODAY),
            Err(
                "Sorry, we cannot process amex credit cards. Only VISA or MasterCard is accepted."
                    .to_owned()
            )
        );
        assert_eq!(
            check_card(&card("4432-8015-6152-0454", 2020, 1), TODAY),
            Err("Your credit card (ending 0454) expired on 1/2020".to_owned())
        );
        // The month of expiry itself is still good; the month before is not.
        assert!(check_card(&card("4432801561520454", 2026, 5), TODAY).is_ok());
        assert!(check_card(&card("4432801561520454", 2026, 4), TODAY).is_err());
        // Absurd fields do not overflow.
        assert!(check_card(&card("4432801561520454", i32::MIN, i32::MIN), TODAY).is_err());
        assert!(check_card(&card("4432801561520454", i32::MAX, i32::MAX), TODAY).is_ok());
    }

    #[test]
    fn last4_never_more() {
        assert_eq!(last4("4432-8015-6152-0454"), "0454");
        assert_eq!(last4("12"), "12");
        assert_eq!(last4(""), "");
    }
}
