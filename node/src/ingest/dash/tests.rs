use super::*;

const MPD: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" mediaPresentationDuration="PT5S" minBufferTime="PT2S" profiles="urn:mpeg:dash:profile:isoff-live:2011">
  <Period id="p0">
    <AdaptationSet id="video" contentType="video" mimeType="video/mp4" segmentAlignment="true">
      <SegmentTemplate timescale="1000" duration="2000" startNumber="1" initialization="v/$RepresentationID$/init.mp4" media="v/$RepresentationID$/seg-$Number%05d$.m4s"/>
      <Representation id="360p" bandwidth="600000" width="640" height="360" codecs="avc1.4d401e"/>
      <Representation id="180p" bandwidth="250000" width="320" height="180" codecs="avc1.4d400c"/>
    </AdaptationSet>
    <AdaptationSet id="audio-en" contentType="audio" mimeType="audio/mp4" lang="en">
      <BaseURL>a/</BaseURL>
      <Representation id="aac" bandwidth="64000" codecs="mp4a.40.2">
        <SegmentTemplate timescale="48000" initialization="init-$Bandwidth$.mp4" media="$Time$.m4s">
          <SegmentTimeline><S t="0" d="96000" r="1"/><S d="48000"/></SegmentTimeline>
        </SegmentTemplate>
      </Representation>
    </AdaptationSet>
    <AdaptationSet id="subs" contentType="text" mimeType="application/mp4" lang="de">
      <Representation id="wvtt" bandwidth="1000">
        <BaseURL>subs.mp4</BaseURL>
        <SegmentList timescale="1" duration="2">
          <Initialization sourceURL="subs.mp4" range="0-99"/>
          <SegmentURL mediaRange="100-299"/>
          <SegmentURL mediaRange="300-349"/>
        </SegmentList>
      </Representation>
    </AdaptationSet>
  </Period>
</MPD>"#;

fn uris(playlist: &MediaPlaylist) -> Vec<(u64, &str, Option<ByteRange>, u128)> {
    playlist
        .segments
        .iter()
        .map(|s| (s.sequence, s.uri.as_str(), s.range, s.duration.as_millis()))
        .collect()
}

#[test]
fn an_mpd_is_told_from_a_playlist() {
    assert!(is_mpd(MPD.as_bytes()));
    assert!(is_mpd(b"<MPD type=\"static\"></MPD>"));
    assert!(!is_mpd(b"#EXTM3U\n#EXT-X-TARGETDURATION:2\n"));
}

#[test]
fn every_representation_is_a_rendition_of_its_kind() {
    let renditions = renditions(MPD.as_bytes(), "live/manifest.mpd").expect("renditions");
    let summary: Vec<_> = renditions
        .iter()
        .map(|r| {
            (
                r.id,
                r.kind,
                r.name.as_str(),
                r.uri.as_str(),
                r.group.as_str(),
                r.language.as_str(),
                r.bandwidth,
                (r.width, r.height),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                0,
                RenditionKind::Variant,
                "360p",
                "live/manifest.mpd#rep-0",
                "",
                "",
                600_000,
                (640, 360)
            ),
            (
                1,
                RenditionKind::Variant,
                "180p",
                "live/manifest.mpd#rep-1",
                "",
                "",
                250_000,
                (320, 180)
            ),
            (
                2,
                RenditionKind::Audio,
                "aac",
                "live/manifest.mpd#rep-2",
                "audio-en",
                "en",
                64_000,
                (0, 0)
            ),
            (
                3,
                RenditionKind::Subtitles,
                "wvtt",
                "live/manifest.mpd#rep-3",
                "subs",
                "de",
                1_000,
                (0, 0)
            ),
        ]
    );
    assert_eq!(renditions[0].codecs, "avc1.4d401e");
}

#[test]
fn number_templates_fill_in_and_the_last_segment_ends_with_the_presentation() {
    let video = media_playlist(MPD.as_bytes(), "manifest.mpd#rep-1", 0, None).expect("a playlist");
    assert!(video.ended);
    assert_eq!(video.media_sequence, 1);
    assert_eq!(video.target_duration, Duration::from_secs(2));
    assert_eq!(
        uris(&video),
        [
            (1, "v/180p/seg-00001.m4s", None, 2000),
            (2, "v/180p/seg-00002.m4s", None, 2000),
            (3, "v/180p/seg-00003.m4s", None, 1000),
        ]
    );
    assert!(
        video
            .segments
            .iter()
            .all(|s| s.map_uri.as_deref() == Some("v/180p/init.mp4") && s.map_range.is_none())
    );
}

#[test]
fn timelines_repeat_and_base_urls_nest() {
    let audio = media_playlist(MPD.as_bytes(), "manifest.mpd#rep-2", 0, None).expect("a playlist");
    assert_eq!(
        uris(&audio),
        [
            (0, "a/0.m4s", None, 2000),
            (96000, "a/96000.m4s", None, 2000),
            (192000, "a/192000.m4s", None, 1000),
        ]
    );
    assert_eq!(
        audio.segments[0].map_uri.as_deref(),
        Some("a/init-64000.mp4")
    );
}

#[test]
fn segment_lists_carry_byte_ranges_of_one_file() {
    let subs = media_playlist(MPD.as_bytes(), "manifest.mpd#rep-3", 0, None).expect("a playlist");
    let range = |offset, length| Some(ByteRange { offset, length });
    assert_eq!(
        uris(&subs),
        [
            (1, "subs.mp4", range(100, 200), 2000),
            (2, "subs.mp4", range(300, 50), 2000)
        ]
    );
    assert_eq!(subs.segments[0].map_uri.as_deref(), Some("subs.mp4"));
    assert_eq!(subs.segments[0].map_range, range(0, 100));
}

#[test]
fn what_cannot_be_ingested_is_refused_by_name() {
    // Live, placed on the clock, but with no clock to place it on.
    let dynamic = MPD.replace("type=\"static\"", "type=\"dynamic\"");
    assert!(matches!(
        media_playlist(dynamic.as_bytes(), "m.mpd#rep-0", 0, None),
        Err(DashError::Bad { reason, .. }) if reason.contains("availabilityStartTime")
    ));
    let two_periods = MPD.replace("</Period>", "</Period><Period id=\"p1\"></Period>");
    assert!(matches!(
        renditions(two_periods.as_bytes(), "m.mpd"),
        Err(DashError::Unsupported(what)) if what.contains("period")
    ));
    let unknown = MPD.replace("$Time$.m4s", "$Foo$.m4s");
    assert!(matches!(
        media_playlist(unknown.as_bytes(), "m.mpd#rep-2", 0, None),
        Err(DashError::Bad { reason, .. }) if reason.contains("$Foo$")
    ));
    assert!(matches!(
        media_playlist(MPD.as_bytes(), "m.mpd#rep-9", 0, None),
        Err(DashError::Unsupported(_))
    ));
    assert!(matches!(
        media_playlist(MPD.as_bytes(), "m.mpd", 0, None),
        Err(DashError::Unsupported(_))
    ));
    assert!(matches!(
        renditions(b"<MPD><Period", "m.mpd"),
        Err(DashError::Unparsable(_))
    ));
    assert!(matches!(
        renditions(b"<MPD type=\"static\"><Period></Period></MPD>", "m.mpd"),
        Err(DashError::Empty)
    ));
}

const LIVE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="dynamic" availabilityStartTime="1970-01-01T00:00:00Z" minimumUpdatePeriod="PT2S" timeShiftBufferDepth="PT10S" minBufferTime="PT2S" profiles="urn:mpeg:dash:profile:isoff-live:2011">
  <Period id="p0" start="PT0S">
    <AdaptationSet id="video" contentType="video" mimeType="video/mp4">
      <SegmentTemplate timescale="1000" duration="2000" startNumber="1" initialization="$RepresentationID$/init.mp4" media="$RepresentationID$/$Number$.m4s"/>
      <Representation id="v" bandwidth="600000"/>
    </AdaptationSet>
    <AdaptationSet id="audio" contentType="audio" mimeType="audio/mp4">
      <SegmentTemplate timescale="1000" initialization="a/init.mp4" media="a/$Time$.m4s">
        <SegmentTimeline><S t="40000" d="2000" r="-1"/></SegmentTimeline>
      </SegmentTemplate>
      <Representation id="a" bandwidth="64000"/>
    </AdaptationSet>
  </Period>
</MPD>"#;

#[test]
fn a_live_number_template_is_placed_on_the_clock_with_its_window() {
    // 61 s after the availability start: 30 whole segments are out, and the
    // 10 s window keeps the last five.
    let video =
        media_playlist(LIVE.as_bytes(), "m.mpd#rep-0", 61_000_000, None).expect("a playlist");
    assert!(!video.ended);
    let numbers: Vec<u64> = video.segments.iter().map(|s| s.sequence).collect();
    assert_eq!(numbers, [26, 27, 28, 29, 30]);
    assert_eq!(video.segments[0].uri, "v/26.m4s");
    assert_eq!(video.media_sequence, 26);
    // Reloaded as often as the MPD says.
    assert_eq!(video.refresh, Some(Duration::from_secs(2)));
    let mut tracker = crate::ingest::playlist::Tracker::new();
    tracker.update(&video);
    assert_eq!(tracker.poll_interval(), Duration::from_secs(2));
    // Two seconds later the window has moved on by one.
    let later =
        media_playlist(LIVE.as_bytes(), "m.mpd#rep-0", 63_000_000, None).expect("a playlist");
    assert_eq!(later.segments.first().map(|s| s.sequence), Some(27));
    assert_eq!(later.segments.last().map(|s| s.sequence), Some(31));
}

#[test]
fn a_live_timeline_repeats_up_to_now_with_whole_segments_only() {
    // From 40 s to now (47 s): 40, 42 and 44 are whole, 46 is not yet.
    let audio =
        media_playlist(LIVE.as_bytes(), "m.mpd#rep-1", 47_000_000, None).expect("a playlist");
    assert!(!audio.ended);
    let uris: Vec<&str> = audio.segments.iter().map(|s| s.uri.as_str()).collect();
    assert_eq!(uris, ["a/40000.m4s", "a/42000.m4s", "a/44000.m4s"]);
    let numbers: Vec<u64> = audio.segments.iter().map(|s| s.sequence).collect();
    // Named by their time: stable however the window slides.
    assert_eq!(numbers, [40000, 42000, 44000]);
}

/// A `sidx` box (version 0) listing media references of `sizes` bytes and
/// `durations` ticks at `timescale`, `first_offset` after the box.
fn sidx(timescale: u32, first_offset: u32, refs: &[(u32, u32, bool)]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&[0, 0, 0, 0]); // version 0, flags
    body.extend_from_slice(&1u32.to_be_bytes()); // reference_ID
    body.extend_from_slice(&timescale.to_be_bytes());
    body.extend_from_slice(&0u32.to_be_bytes()); // earliest_presentation_time
    body.extend_from_slice(&first_offset.to_be_bytes());
    body.extend_from_slice(&0u16.to_be_bytes()); // reserved
    body.extend_from_slice(&(refs.len() as u16).to_be_bytes());
    for &(size, duration, nested) in refs {
        let kind = if nested { 1u32 << 31 } else { 0 };
        body.extend_from_slice(&(kind | size).to_be_bytes());
        body.extend_from_slice(&duration.to_be_bytes());
        body.extend_from_slice(&0x9000_0000u32.to_be_bytes()); // starts with SAP 1
    }
    let mut out = ((body.len() + 8) as u32).to_be_bytes().to_vec();
    out.extend_from_slice(b"sidx");
    out.extend_from_slice(&body);
    out
}

fn segment_base_mpd(index_len: usize) -> String {
    format!(
        r#"<?xml version="1.0"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" mediaPresentationDuration="PT5S" profiles="urn:mpeg:dash:profile:isoff-on-demand:2011">
  <Period>
    <AdaptationSet contentType="video" mimeType="video/mp4">
      <Representation id="one" bandwidth="500000">
        <BaseURL>media/one.mp4</BaseURL>
        <SegmentBase indexRange="500-{}"><Initialization range="0-499"/></SegmentBase>
      </Representation>
    </AdaptationSet>
  </Period>
</MPD>"#,
        500 + index_len - 1
    )
}

#[test]
fn segment_base_segments_are_the_ranges_its_sidx_lists() {
    let index = sidx(
        90_000,
        10,
        &[
            (1000, 180_000, false),
            (1500, 180_000, false),
            (700, 90_000, false),
        ],
    );
    let mpd = segment_base_mpd(index.len());
    let needed = index_needed(mpd.as_bytes(), "m.mpd#rep-0").expect("read");
    assert_eq!(
        needed,
        Some((
            "media/one.mp4".to_string(),
            ByteRange {
                offset: 500,
                length: index.len() as u64
            }
        ))
    );
    assert!(matches!(
        media_playlist(mpd.as_bytes(), "m.mpd#rep-0", 0, None),
        Err(DashError::Unsupported(what)) if what.contains("sidx")
    ));
    let playlist =
        media_playlist(mpd.as_bytes(), "m.mpd#rep-0", 0, Some(&index)).expect("a playlist");
    // The first segment starts after the box and its first_offset.
    let first = 500 + index.len() as u64 + 10;
    let range = |offset, length| Some(ByteRange { offset, length });
    assert_eq!(
        uris(&playlist),
        [
            (1, "media/one.mp4", range(first, 1000), 2000),
            (2, "media/one.mp4", range(first + 1000, 1500), 2000),
            (3, "media/one.mp4", range(first + 2500, 700), 1000),
        ]
    );
    assert!(playlist.ended);
    assert_eq!(
        playlist.segments[0].map_uri.as_deref(),
        Some("media/one.mp4")
    );
    assert_eq!(playlist.segments[0].map_range, range(0, 500));

    // A rendition of any other addressing needs no index.
    assert_eq!(index_needed(MPD.as_bytes(), "m.mpd#rep-0"), Ok(None));
    // Nested indexes, truncated or foreign boxes are refused.
    let nested = sidx(90_000, 0, &[(1000, 180_000, true)]);
    let mpd = segment_base_mpd(nested.len());
    assert!(matches!(
        media_playlist(mpd.as_bytes(), "m.mpd#rep-0", 0, Some(&nested)),
        Err(DashError::Unsupported(what)) if what.contains("other sidx")
    ));
    assert!(matches!(
        media_playlist(mpd.as_bytes(), "m.mpd#rep-0", 0, Some(&nested[..20])),
        Err(DashError::Bad { .. })
    ));
    let mut foreign = nested.clone();
    foreign[4..8].copy_from_slice(b"moof");
    assert!(matches!(
        media_playlist(mpd.as_bytes(), "m.mpd#rep-0", 0, Some(&foreign)),
        Err(DashError::Bad { .. })
    ));
}
