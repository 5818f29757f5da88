"""The GPU catalog: facts from EC2 (moto), prices from the Price List API or the snapshot."""

from __future__ import annotations

import json

import pytest

from gpubox.providers.aws import catalog


def by_name(types):
    return {t.name: t for t in types}


def test_gpu_facts_for_g4dn_g5_and_p5(aws, settings):
    types = by_name(catalog.gpu_types(settings, "us-east-1"))
    g4dn, g5, p5 = types["g4dn.xlarge"], types["g5.xlarge"], types["p5.48xlarge"]
    assert (g4dn.gpu_model, g4dn.gpu_count, g4dn.gpu_memory_gib, g4dn.vcpus, g4dn.memory_gib) == (
        "T4", 1, 16.0, 4, 16.0,
    )
    assert (g5.gpu_model, g5.gpu_count, g5.vcpus) == ("A10G", 1, 4)
    assert g5.gpu_memory_gib == pytest.approx(22.4, abs=0.1)  # AWS reports 22888 MiB
    assert (p5.gpu_model, p5.gpu_count) == ("H100", 8)
    assert g4dn.note.startswith("cheapest way to learn")
    assert p5.note == "H100 80 GB (8× in p5.48xlarge), for scaling"
    assert all(t.arch == "x86_64" for t in (g4dn, g5, p5))
    assert "m5.large" not in types  # GPU types only


def test_gpu_filter_and_region_offering(aws, settings):
    t4 = catalog.gpu_types(settings, "us-east-1", gpu="T4", prices=False)
    assert t4 and all(t.gpu_model == "T4" for t in t4)
    assert "g4dn.xlarge" in by_name(t4)
    in_ireland = by_name(catalog.gpu_types(settings, "eu-west-1", prices=False))
    assert "g4dn.xlarge" in in_ireland and "g6.xlarge" not in in_ireland


def test_prices_fall_back_to_the_snapshot_with_its_date(aws, settings):
    snapshot = catalog.price_snapshot()
    assert snapshot["meta"]["approximate"] is True
    g4dn = by_name(catalog.gpu_types(settings, "us-east-1", gpu="T4"))["g4dn.xlarge"]
    assert g4dn.on_demand == catalog.Price(0.526, "snapshot", snapshot["meta"]["date"])
    assert g4dn.spot is not None and g4dn.spot.source == "spot-price-history"


def test_on_demand_price_from_the_pricing_api(aws, settings):
    """moto has no Price List API: botocore's Stubber answers with an AWS-shaped product."""
    from botocore.stub import Stubber

    from gpubox.providers.aws.session import client

    product = {
        "product": {"attributes": {"instanceType": "g5.xlarge", "location": "US West (Oregon)"}},
        "publicationDate": "2026-11-01T00:00:00Z",
        "terms": {
            "OnDemand": {
                "ABC.JRTCKXETXF": {
                    "effectiveDate": "2026-11-01T00:00:00Z",
                    "priceDimensions": {
                        "ABC.JRTCKXETXF.6YS6EN2CT7": {
                            "unit": "Hrs",
                            "pricePerUnit": {"USD": "1.0060000000"},
                            "description": "$1.006 per On Demand Linux g5.xlarge Instance Hour",
                        }
                    },
                }
            }
        },
    }
    pricing = client(settings, "pricing", "us-east-1", purpose="once")  # as prices.py asks
    with Stubber(pricing) as stub:
        stub.add_response(
            "get_products",
            {"PriceList": [json.dumps(product)], "FormatVersion": "aws_v1"},
            {
                "ServiceCode": "AmazonEC2",
                "Filters": [
                    {"Type": "TERM_MATCH", "Field": "instanceType", "Value": "g5.xlarge"},
                    {"Type": "TERM_MATCH", "Field": "location", "Value": "US West (Oregon)"},
                    {"Type": "TERM_MATCH", "Field": "operatingSystem", "Value": "Linux"},
                    {"Type": "TERM_MATCH", "Field": "tenancy", "Value": "Shared"},
                    {"Type": "TERM_MATCH", "Field": "preInstalledSw", "Value": "NA"},
                    {"Type": "TERM_MATCH", "Field": "capacitystatus", "Value": "Used"},
                ],
                "MaxResults": 10,
            },
        )
        price = catalog.on_demand_price(settings, "g5.xlarge", "us-west-2")
        stub.assert_no_pending_responses()
    assert price == catalog.Price(1.006, "aws-pricing-api", "2026-11-01")


def test_spot_price_is_the_lowest_zone_latest(aws, settings):
    price = catalog.spot_price(settings, "g4dn.xlarge", "us-east-1")
    assert price is not None and price.value > 0


def test_vcpus_and_where_a_type_is_offered(aws, settings):
    assert catalog.vcpus_of(settings, "g5.12xlarge", "us-east-1") == 48
    zones = catalog.offered_in(settings, "g5.xlarge", "us-east-1")
    assert zones and "us-east-1e" not in zones
    found = catalog.regions_offering(settings, "g6.xlarge", ["eu-west-1", "us-east-1"])
    assert list(found) == ["us-east-1"]


def test_storage_price_per_gb_month():
    assert catalog.storage_price_per_gb_month("us-east-1") == pytest.approx(0.08)
    assert catalog.storage_price_per_gb_month("nowhere-1") == pytest.approx(0.08)
