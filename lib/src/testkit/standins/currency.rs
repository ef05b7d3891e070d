//! Currency: converts through EUR with a fixed table of rates, as upstream.
//!
//! Upstream divides by the source rate, rounds to nanos, multiplies by the
//! target rate and floors, in floating point. Doing the same steps in exact
//! decimals keeps its visible quirks: an amount converted to its own
//! currency can come back one nano short (1 USD -> 0.999999999 USD), and a
//! currency missing from the table gives a zero amount rather than an error.

use std::sync::{Arc, Mutex};

use rust_decimal::{Decimal, RoundingStrategy};
use tonic::{Request, Response, Status};

use super::Rpc;
use super::control::{Control, lock};
use crate::money::Money as Amount;
use crate::proto::hipstershop::currency_service_server::{CurrencyService, CurrencyServiceServer};
use crate::proto::hipstershop::{
    CurrencyConversionRequest, Empty, GetSupportedCurrenciesResponse, Money,
};

/// Units of each currency per 1 EUR, as `(code, mantissa, scale)`: USD is
/// 11305 * 10^-4 = 1.1305. Values from upstream's `currency_conversion.json`.
pub const EUR_RATES: &[(&str, i64, u32)] = &[
    ("EUR", 1, 0),
    ("USD", 11305, 4),
    ("JPY", 12640, 2),
    ("GBP", 85970, 5),
    ("CAD", 15128, 4),
    ("CHF", 11360, 4),
    ("AUD", 16072, 4),
    ("SEK", 105375, 4),
];

/// The currency stand-in: supported codes are [`EUR_RATES`]'s.
#[derive(Debug, Clone, Default)]
pub struct CurrencyStandIn {
    /// When set, every Convert answers this instead of converting.
    answer: Arc<Mutex<Option<Money>>>,
}

impl CurrencyStandIn {
    /// Makes every Convert answer `money` (any value, invalid ones
    /// included); `None` goes back to converting.
    pub fn answer_with(&self, money: Option<Money>) {
        *lock(&self.answer) = money;
    }

    /// The codes GetSupportedCurrencies returns.
    pub fn supported(&self) -> Vec<String> {
        EUR_RATES
            .iter()
            .map(|(code, _, _)| (*code).to_owned())
            .collect()
    }

    pub(super) fn server(&self, control: Arc<Control>) -> CurrencyServiceServer<CurrencyServer> {
        CurrencyServiceServer::new(CurrencyServer {
            currency: self.clone(),
            control,
        })
    }
}

fn rate(code: &str) -> Option<Decimal> {
    EUR_RATES
        .iter()
        .find(|(c, _, _)| *c == code)
        .map(|&(_, mantissa, scale)| Decimal::new(mantissa, scale))
}

/// Converts `from` into `to_code` the way upstream does (see the module
/// docs); an unsupported code on either side gives zero in `to_code`.
pub(super) fn convert(from: &Money, to_code: &str) -> Result<Money, Status> {
    let (Some(from_rate), Some(to_rate)) = (rate(&from.currency_code), rate(to_code)) else {
        // Upstream computes with an undefined rate, and NaN goes on the
        // wire as 0.
        return Ok(Money {
            currency_code: to_code.to_owned(),
            units: 0,
            nanos: 0,
        });
    };
    let amount = Amount::try_from(from)
        .map_err(|error| Status::invalid_argument(format!("from: {error}")))?
        .to_decimal();
    let too_large = || Status::out_of_range("converted amount does not fit in Money");
    let euros = amount
        .checked_div(from_rate)
        .ok_or_else(too_large)?
        .round_dp_with_strategy(9, RoundingStrategy::MidpointAwayFromZero);
    let converted = euros
        .checked_mul(to_rate)
        .ok_or_else(too_large)?
        .round_dp_with_strategy(9, RoundingStrategy::ToZero);
    let money = Amount::from_decimal(to_code, converted).map_err(|_| too_large())?;
    Ok(money.into())
}

/// The gRPC face of [`CurrencyStandIn`].
#[derive(Debug)]
pub(super) struct CurrencyServer {
    currency: CurrencyStandIn,
    control: Arc<Control>,
}

#[tonic::async_trait]
impl CurrencyService for CurrencyServer {
    async fn get_supported_currencies(
        &self,
        request: Request<Empty>,
    ) -> Result<Response<GetSupportedCurrenciesResponse>, Status> {
        self.control
            .enter(Rpc::GetSupportedCurrencies, request.metadata())
            .await?;
        Ok(Response::new(GetSupportedCurrenciesResponse {
            currency_codes: self.currency.supported(),
        }))
    }

    async fn convert(
        &self,
        request: Request<CurrencyConversionRequest>,
    ) -> Result<Response<Money>, Status> {
        self.control.enter(Rpc::Convert, request.metadata()).await?;
        if let Some(answer) = lock(&self.currency.answer).clone() {
            return Ok(Response::new(answer));
        }
        let request = request.into_inner();
        let from = request
            .from
            .ok_or_else(|| Status::invalid_argument("from is required"))?;
        convert(&from, &request.to_code).map(Response::new)
    }
}
