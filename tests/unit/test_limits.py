"""The contract's request bounds: every request field has one, and the validator enforces
them with messages that name the field and the bound."""

from collections.abc import Iterator
from typing import Any

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor
from ordermesh.auth.v1 import auth_pb2
from ordermesh.common.v1 import limits_pb2
from ordermesh.fulfillment.v1 import fulfillment_pb2
from ordermesh.inventory.v1 import inventory_pb2
from ordermesh.order.v1 import order_pb2
from ordermesh.payment.v1 import payment_pb2
from ordermesh.webhook.v1 import webhook_pb2

from services.order.domain.idempotency import MAX_KEY_LENGTH
from services.order.domain.model import MAX_METADATA_BYTES
from services.platform.contexts import PUBLIC_SERVICE_NAMES
from services.platform.server import max_request_bytes
from services.platform.validation import UnboundedFieldError, limits_of, rules_for

# Every public service's module is imported, so its descriptors are in the default pool.
SERVICE_MODULES = (auth_pb2, order_pb2, inventory_pb2, payment_pb2, fulfillment_pb2, webhook_pb2)


def request_types() -> Iterator[Descriptor]:
    assert len(SERVICE_MODULES) == len(PUBLIC_SERVICE_NAMES)
    pool = descriptor_pool.Default()
    for service in PUBLIC_SERVICE_NAMES:
        for method in pool.FindServiceByName(service).methods:
            yield method.input_type


@pytest.mark.parametrize("descriptor", list(request_types()), ids=lambda d: d.full_name)
def test_every_request_type_bounds_every_field(descriptor: Descriptor) -> None:
    rules = rules_for(descriptor)
    empty = message_factory.GetMessageClass(descriptor)()
    assert rules.violations(empty) == []
    assert empty.ByteSize() <= rules.max_bytes


def test_the_domain_keeps_the_metadata_bound_the_contract_declares() -> None:
    for message in (order_pb2.CreateOrderRequest, order_pb2.UpdateOrderStatusRequest):
        limits = limits_of(message.DESCRIPTOR.fields_by_name["metadata"])
        assert limits is not None
        assert limits.max_json_bytes == MAX_METADATA_BYTES


def test_the_domain_keeps_the_idempotency_key_bound_the_contract_declares() -> None:
    # The key also arrives as metadata, which the contract's checks do not see.
    limits = limits_of(order_pb2.CreateOrderRequest.DESCRIPTOR.fields_by_name["idempotency_key"])
    assert limits is not None
    assert limits.max_length == MAX_KEY_LENGTH


def test_a_field_without_a_bound_is_refused_when_the_rules_are_compiled() -> None:
    file = descriptor_pb2.FileDescriptorProto(name="unbounded_test.proto", package="unbounded")
    file.message_type.add(name="Request").field.add(
        name="note",
        number=1,
        type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
        label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    with pytest.raises(UnboundedFieldError, match=r"unbounded\.Request\.note"):
        rules_for(pool.FindMessageTypeByName("unbounded.Request"))


def test_a_repeated_field_without_max_items_is_refused() -> None:
    file = descriptor_pb2.FileDescriptorProto(
        name="unbounded_items_test.proto",
        package="unbounded_items",
        dependency=["ordermesh/common/v1/limits.proto"],
    )
    field = file.message_type.add(name="Request").field.add(
        name="tags",
        number=1,
        type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
        label=descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED,
    )
    field.options.Extensions[limits_pb2.limits].max_length = 10
    pool = descriptor_pool.DescriptorPool()
    for dependency in (*limits_pb2.DESCRIPTOR.dependencies, limits_pb2.DESCRIPTOR):
        proto = descriptor_pb2.FileDescriptorProto()
        dependency.CopyToProto(proto)
        pool.Add(proto)
    pool.Add(file)
    descriptor = pool.FindMessageTypeByName("unbounded_items.Request")
    message_factory.GetMessageClass(descriptor)
    with pytest.raises(UnboundedFieldError, match="max_items"):
        rules_for(descriptor)


def test_strings_longer_than_their_bound_are_named_with_the_bound() -> None:
    request = order_pb2.CancelOrderRequest(order_id="o", reason="x" * 501)
    [violation] = rules_for(request.DESCRIPTOR).violations(request)
    assert violation.field == "reason"
    assert violation.description == "reason is 501 characters long; at most 500 are allowed"


def test_length_counts_characters_not_bytes() -> None:
    request = order_pb2.CancelOrderRequest(order_id="o", reason="€" * 500)
    assert rules_for(request.DESCRIPTOR).violations(request) == []


def test_nul_characters_are_refused_wherever_they_are() -> None:
    request = order_pb2.CreateOrderRequest(payment_method="tok\x00visa")
    request.items.add(product_id="p\x00", quantity=1)
    request.shipping_address.city = "\x00"
    request.metadata.update({"k\x00": "v"})
    found = {v.field: v.description for v in rules_for(request.DESCRIPTOR).violations(request)}
    assert found == {
        "items[0].product_id": "items[0].product_id contains a NUL character",
        "shipping_address.city": "shipping_address.city contains a NUL character",
        "payment_method": "payment_method contains a NUL character",
        "metadata": "metadata contains a NUL character",
    }


def test_a_nul_inside_a_metadata_value_is_refused() -> None:
    request = order_pb2.UpdateOrderStatusRequest(order_id="o")
    request.metadata.update({"note": {"deep": ["ok", "bad\x00"]}})
    [violation] = rules_for(request.DESCRIPTOR).violations(request)
    assert violation.description == "metadata contains a NUL character"


def test_repeated_fields_are_bounded_in_count_and_per_element() -> None:
    request = inventory_pb2.BatchGetProductsRequest(product_ids=["p"] * 101)
    [violation] = rules_for(request.DESCRIPTOR).violations(request)
    assert violation.description == "product_ids has 101 items; at most 100 are allowed"
    request = inventory_pb2.BatchGetProductsRequest(product_ids=["ok", "p" * 65])
    [violation] = rules_for(request.DESCRIPTOR).violations(request)
    assert violation.field == "product_ids[1]"


def test_ten_thousand_items_are_one_violation_not_ten_thousand() -> None:
    request = order_pb2.CreateOrderRequest()
    for _ in range(10_000):
        request.items.add(product_id="p" * 100, quantity=1)
    violations = rules_for(request.DESCRIPTOR).violations(request)
    assert [v.description for v in violations] == ["items has 10000 items; at most 50 are allowed"]


def test_metadata_is_bounded_in_size_and_depth() -> None:
    request = order_pb2.CreateOrderRequest()
    request.metadata.update({"blob": "x" * 5000})
    [violation] = rules_for(request.DESCRIPTOR).violations(request)
    assert violation.description.startswith("metadata is 5011 bytes as JSON; at most 4096")
    nested: dict[str, Any] = {"leaf": 1}
    for _ in range(8):
        nested = {"n": nested}
    request = order_pb2.CreateOrderRequest()
    request.metadata.update(nested)
    [violation] = rules_for(request.DESCRIPTOR).violations(request)
    assert violation.description == "metadata nests 9 levels deep; at most 8 are allowed"


def test_a_price_must_be_a_scalar() -> None:
    request = order_pb2.CreateOrderRequest()
    request.items.add(product_id="p", quantity=1).unit_price.struct_value.update({"a": 1})
    [violation] = rules_for(request.DESCRIPTOR).violations(request)
    assert violation.field == "items[0].unit_price"
    assert "at most 0" in violation.description


def test_a_valid_request_has_no_violations() -> None:
    request = order_pb2.CreateOrderRequest(payment_method="tok_visa", idempotency_key="k")
    request.items.add(product_id="kb-mech-01", quantity=2).unit_price.number_value = 29.99
    request.metadata.update({"gift": True, "note": "leave at the door"})
    assert rules_for(request.DESCRIPTOR).violations(request) == []
    webhook = webhook_pb2.RegisterWebhookRequest(url="https://example.com/h", events=["*"])
    assert rules_for(webhook.DESCRIPTOR).violations(webhook) == []


def test_the_largest_valid_request_fits_the_computed_bound() -> None:
    request = order_pb2.CreateOrderRequest(
        payment_method="😀" * 64, user_id="😀" * 64, idempotency_key="😀" * 200
    )
    for _ in range(50):
        item = request.items.add(product_id="😀" * 64, quantity=-1)
        item.unit_price.string_value = "9" * 30
    request.total_amount.string_value = "9" * 30
    for field in ("street", "city", "state", "zip", "country"):
        bound = limits_of(request.shipping_address.DESCRIPTOR.fields_by_name[field])
        assert bound is not None
        setattr(request.shipping_address, field, "😀" * bound.max_length)
    # Numbers in a list are the densest protobuf per byte of JSON ("0.0," → 11 bytes).
    request.metadata.update({"a": [0] * 1020})
    rules = rules_for(request.DESCRIPTOR)
    assert rules.violations(request) == []
    assert request.ByteSize() <= rules.max_bytes


def test_the_server_accepts_exactly_what_the_largest_request_needs() -> None:
    largest = max(rules_for(d).max_bytes for d in request_types())
    cap = max_request_bytes(PUBLIC_SERVICE_NAMES)
    assert largest <= cap < largest + 1024
    assert cap < 4 * 1024 * 1024
    auth_only = max_request_bytes(["ordermesh.auth.v1.AuthService"])
    assert auth_only < cap
    assert rules_for(auth_pb2.LoginRequest.DESCRIPTOR).max_bytes <= auth_only
