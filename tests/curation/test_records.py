from curation.records import STANDARD_IMAGE_FIELDS, image_entry, image_file_name, image_key


def test_image_entry_keeps_the_standard_fields_first():
    entry = image_entry(5, (100, 150), {"source": "s3://b/x.jpg", "width": 1, "country": "NZ"})
    assert list(entry)[:4] == list(STANDARD_IMAGE_FIELDS)
    assert entry == {
        "image_id": 5,
        "width": 150,
        "height": 100,
        "file_name": "sa_5.jpg",
        "source": "s3://b/x.jpg",
        "country": "NZ",
    }


def test_images_are_named_as_in_sa1b():
    assert image_key(333521560) == "sa_333521560" and image_file_name(7) == "sa_7.jpg"
