// asyncflow dashboard: live updates of server-rendered pages.
//
// A live page has data-live (its Server-Sent Events URL) and data-fragments (the URL of its
// live parts) on <body>. Each "change" event names the workflows that changed and how (one
// letter per kind: m message, e event, s stream, j journal entry, t terminal, r resumed; c a
// schedule changed, keyed by its name) in "ids", and the queues that changed in "queues" (q a
// workflow was enqueued or put back, f one ended: a slot may be free); the page re-fetches the parts those kinds touch and swaps every
// returned [data-part] element in. One fetch at a time: changes arriving meanwhile are merged
// into the next one. No timers, no polling. A part whose markup did not change is left alone,
// and nothing is swapped while a mouse button or finger is down: a click that started on a
// button lands on that button (the held swap follows right after it).
(function () {
  "use strict";

  var body = document.body;
  var liveUrl = body.getAttribute("data-live");
  var fragmentsUrl = body.getAttribute("data-fragments");
  var indicator = document.getElementById("live-status");

  // Which live parts of a workflow page each kind of change touches (null: all of them).
  // Steps and received messages make no notification of their own, so every change also
  // refreshes the timeline and the mailbox (a recv takes its message without a word). Queue
  // kinds touch a queued workflow's summary and the queue pages' parts (the list and queue
  // pages' fragments return all their parts whatever is asked).
  var KIND_PARTS = {
    m: ["summary", "timeline", "messages"],
    e: ["summary", "timeline", "messages", "events"],
    s: ["summary", "timeline", "messages", "streams"],
    j: ["summary", "timeline"],
    q: ["summary", "queues", "queue", "list"],
    f: ["summary", "queues", "queue", "list"],
    t: null,
    r: null
  };

  var wanted = null; // null: nothing to do; "all"; or an object used as a set of part names
  var busy = false;
  var refreshes = 0;
  var pressed = false; // a pointer is down: swaps wait for its click to land
  var held = []; // the markup of swaps held while pressed, in order

  function setState(state, text) {
    body.setAttribute("data-live-state", state);
    if (indicator) {
      indicator.className = "live-" + state;
      indicator.textContent = text;
    }
  }

  function want(parts) {
    if (parts === null || wanted === "all") {
      wanted = "all";
    } else {
      wanted = wanted || {};
      parts.forEach(function (part) { wanted[part] = true; });
    }
    run();
  }

  function streamPositions() {
    // Stream boxes scrolled to their end stay at their end when new entries arrive.
    var atEnd = {};
    document.querySelectorAll("ol.stream-entries").forEach(function (box) {
      var key = box.getAttribute("data-stream-key");
      atEnd[key] = box.scrollTop + box.clientHeight >= box.scrollHeight - 4;
    });
    return atEnd;
  }

  function scrollStreams(atEnd) {
    document.querySelectorAll("ol.stream-entries").forEach(function (box) {
      var key = box.getAttribute("data-stream-key");
      if (!(key in atEnd) || atEnd[key]) {
        box.scrollTop = box.scrollHeight;
      }
    });
  }

  function openExpanders() {
    // Expanders the reader opened (or closed) stay so when their part is swapped.
    var open = {};
    document.querySelectorAll("details[data-expander]").forEach(function (d) {
      open[d.getAttribute("data-expander")] = d.open;
    });
    return open;
  }

  function swap(html) {
    if (pressed) {
      held.push(html);
      return;
    }
    var doc = new DOMParser().parseFromString(html, "text/html");
    var atEnd = streamPositions();
    var open = openExpanders();
    doc.querySelectorAll("details[data-expander]").forEach(function (d) {
      var id = d.getAttribute("data-expander");
      if (id in open) {
        d.open = open[id];
      }
    });
    doc.querySelectorAll("[data-part]").forEach(function (fresh) {
      var name = fresh.getAttribute("data-part");
      var old = document.querySelector('[data-part="' + CSS.escape(name) + '"]');
      if (old && !old.isEqualNode(fresh)) {
        old.replaceWith(document.adoptNode(fresh));
      }
    });
    scrollStreams(atEnd);
  }

  function run() {
    if (busy || wanted === null) {
      return;
    }
    var parts = wanted;
    wanted = null;
    busy = true;
    var url = fragmentsUrl;
    if (parts !== "all") {
      url += (url.indexOf("?") < 0 ? "?" : "&") + "parts=" +
        encodeURIComponent(Object.keys(parts).join(","));
    }
    fetch(url, { credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (!response.ok) {
          throw new Error("HTTP " + response.status);
        }
        return response.text();
      })
      .then(function (html) {
        swap(html);
        refreshes += 1;
        body.setAttribute("data-refreshes", String(refreshes));
      })
      .catch(function (error) {
        setState("error", "update failed");
        console.warn("asyncflow dashboard: refresh failed:", error);
      })
      .then(function () {
        busy = false;
        run();
      });
  }

  function onChange(event) {
    var data = JSON.parse(event.data);
    if (data.all) {
      want(null);
      return;
    }
    var parts = {};
    var groups = [data.ids || {}, data.queues || {}];
    for (var g = 0; g < groups.length; g++) {
      var keys = Object.keys(groups[g]);
      for (var i = 0; i < keys.length; i++) {
        var kinds = groups[g][keys[i]];
        for (var j = 0; j < kinds.length; j++) {
          var touched = KIND_PARTS[kinds[j]];
          if (!touched) {
            want(null); // terminal, resumed, or a kind this script does not know
            return;
          }
          touched.forEach(function (part) { parts[part] = true; });
        }
      }
    }
    want(Object.keys(parts));
  }

  function release() {
    if (!pressed) {
      return;
    }
    pressed = false;
    // The click (and a form's submit) is dispatched right after pointerup in the same input
    // task; a held swap goes in after it.
    setTimeout(function () {
      while (held.length && !pressed) {
        swap(held.shift());
      }
    }, 0);
  }

  scrollStreams({});
  document.addEventListener("pointerdown", function () { pressed = true; }, true);
  document.addEventListener("pointerup", release, true);
  document.addEventListener("pointercancel", release, true);
  if (!liveUrl || !fragmentsUrl || !window.EventSource) {
    return;
  }
  var source = new EventSource(liveUrl);
  source.addEventListener("ready", function () {
    setState("on", "live");
    want(null); // whatever changed between rendering and subscribing
  });
  source.addEventListener("change", onChange);
  source.addEventListener("error", function () {
    setState("off", "reconnecting…"); // EventSource reconnects by itself
  });
  window.addEventListener("pagehide", function () { source.close(); });
})();
