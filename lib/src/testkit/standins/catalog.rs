//! Product catalog: a fixed list of upstream's products, prices in USD.

use std::sync::{Arc, Mutex};

use tonic::{Request, Response, Status};

use super::Rpc;
use super::control::{Control, lock};
use crate::proto::hipstershop::product_catalog_service_server::{
    ProductCatalogService, ProductCatalogServiceServer,
};
use crate::proto::hipstershop::{
    Empty, GetProductRequest, ListProductsResponse, Money, Product, SearchProductsRequest,
    SearchProductsResponse,
};

/// One product of the initial catalog.
struct Seed {
    id: &'static str,
    name: &'static str,
    description: &'static str,
    picture: &'static str,
    units: i64,
    nanos: i32,
    categories: &'static [&'static str],
}

/// Upstream's product ids and names; prices as CONTRACT.md states them where
/// it does, so tests can rely on `OLJCESPC7Z` = 19.99 and `66VCHSJNUP` = 34.99.
const PRODUCTS: &[Seed] = &[
    Seed {
        id: "OLJCESPC7Z",
        name: "Sunglasses",
        description: "Add a modern touch to your outfits with these sleek aviator sunglasses.",
        picture: "/static/img/products/sunglasses.jpg",
        units: 19,
        nanos: 990_000_000,
        categories: &["accessories"],
    },
    Seed {
        id: "66VCHSJNUP",
        name: "Tank Top",
        description: "Perfectly cropped cotton tank, with a scooped neckline.",
        picture: "/static/img/products/tank-top.jpg",
        units: 34,
        nanos: 990_000_000,
        categories: &["clothing", "tops"],
    },
    Seed {
        id: "1YMWWN1N4O",
        name: "Watch",
        description: "This gold-tone stainless steel watch will work with most of your outfits.",
        picture: "/static/img/products/watch.jpg",
        units: 109,
        nanos: 990_000_000,
        categories: &["accessories"],
    },
    Seed {
        id: "L9ECAV7KIM",
        name: "Loafers",
        description: "A neat addition to your summer wardrobe.",
        picture: "/static/img/products/loafers.jpg",
        units: 89,
        nanos: 990_000_000,
        categories: &["footwear"],
    },
    Seed {
        id: "2ZYFJ3GM2N",
        name: "Hairdryer",
        description: "This lightweight hairdryer has 3 heat and speed settings.",
        picture: "/static/img/products/hairdryer.jpg",
        units: 24,
        nanos: 990_000_000,
        categories: &["hair", "beauty"],
    },
    Seed {
        id: "0PUK6V6EV0",
        name: "Candle Holder",
        description: "This small but intricate candle holder is an excellent gift.",
        picture: "/static/img/products/candle-holder.jpg",
        units: 18,
        nanos: 990_000_000,
        categories: &["decor", "home"],
    },
    Seed {
        id: "LS4PSXUNUM",
        name: "Salt & Pepper Shakers",
        description: "Add some flavor to your kitchen.",
        picture: "/static/img/products/salt-and-pepper-shakers.jpg",
        units: 18,
        nanos: 490_000_000,
        categories: &["kitchen"],
    },
    Seed {
        id: "9SIQT8TOJO",
        name: "Bamboo Glass Jar",
        description: "This bamboo glass jar can hold 57 oz (1.7 l).",
        picture: "/static/img/products/bamboo-glass-jar.jpg",
        units: 5,
        nanos: 490_000_000,
        categories: &["kitchen"],
    },
    Seed {
        id: "6E92ZMYYFZ",
        name: "Mug",
        description: "A simple mug with a mustard interior.",
        picture: "/static/img/products/mug.jpg",
        units: 8,
        nanos: 990_000_000,
        categories: &["kitchen"],
    },
];

/// The catalog stand-in: read and change the products it serves.
#[derive(Debug, Clone)]
pub struct CatalogStandIn {
    products: Arc<Mutex<Vec<Product>>>,
}

impl Default for CatalogStandIn {
    fn default() -> CatalogStandIn {
        let products = PRODUCTS
            .iter()
            .map(|seed| Product {
                id: seed.id.to_owned(),
                name: seed.name.to_owned(),
                description: seed.description.to_owned(),
                picture: seed.picture.to_owned(),
                price_usd: Some(Money {
                    currency_code: "USD".to_owned(),
                    units: seed.units,
                    nanos: seed.nanos,
                }),
                categories: seed.categories.iter().map(|&c| c.to_owned()).collect(),
            })
            .collect();
        CatalogStandIn {
            products: Arc::new(Mutex::new(products)),
        }
    }
}

impl CatalogStandIn {
    /// Every product served, in catalog order.
    pub fn products(&self) -> Vec<Product> {
        lock(&self.products).clone()
    }

    /// The product with `id`, if the catalog has it.
    pub fn product(&self, id: &str) -> Option<Product> {
        lock(&self.products).iter().find(|p| p.id == id).cloned()
    }

    /// Sets the price of `id` to any value, including invalid money (nanos
    /// out of range, signs that disagree) to test checkout's defences.
    /// Returns false when there is no such product.
    pub fn set_price(&self, id: &str, price_usd: Money) -> bool {
        match lock(&self.products).iter_mut().find(|p| p.id == id) {
            Some(product) => {
                product.price_usd = Some(price_usd);
                true
            }
            None => false,
        }
    }

    /// Adds `product`, or replaces the one with the same id.
    pub fn upsert(&self, product: Product) {
        let mut products = lock(&self.products);
        match products.iter_mut().find(|p| p.id == product.id) {
            Some(existing) => *existing = product,
            None => products.push(product),
        }
    }

    pub(super) fn server(
        &self,
        control: Arc<Control>,
    ) -> ProductCatalogServiceServer<CatalogServer> {
        ProductCatalogServiceServer::new(CatalogServer {
            catalog: self.clone(),
            control,
        })
    }
}

/// The gRPC face of [`CatalogStandIn`].
#[derive(Debug)]
pub(super) struct CatalogServer {
    catalog: CatalogStandIn,
    control: Arc<Control>,
}

#[tonic::async_trait]
impl ProductCatalogService for CatalogServer {
    async fn list_products(
        &self,
        request: Request<Empty>,
    ) -> Result<Response<ListProductsResponse>, Status> {
        self.control
            .enter(Rpc::ListProducts, request.metadata())
            .await?;
        Ok(Response::new(ListProductsResponse {
            products: self.catalog.products(),
        }))
    }

    async fn get_product(
        &self,
        request: Request<GetProductRequest>,
    ) -> Result<Response<Product>, Status> {
        self.control
            .enter(Rpc::GetProduct, request.metadata())
            .await?;
        let id = request.into_inner().id;
        match self.catalog.product(&id) {
            Some(product) => Ok(Response::new(product)),
            // Upstream's wording and code.
            None => Err(Status::not_found(format!("no product with ID {id}"))),
        }
    }

    async fn search_products(
        &self,
        request: Request<SearchProductsRequest>,
    ) -> Result<Response<SearchProductsResponse>, Status> {
        self.control
            .enter(Rpc::SearchProducts, request.metadata())
            .await?;
        // Upstream: case-insensitive substring of the name or description.
        let query = request.into_inner().query.to_lowercase();
        let results = self
            .catalog
            .products()
            .into_iter()
            .filter(|p| {
                p.name.to_lowercase().contains(&query)
                    || p.description.to_lowercase().contains(&query)
            })
            .collect();
        Ok(Response::new(SearchProductsResponse { results }))
    }
}
