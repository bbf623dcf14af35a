#pragma once
// Real-world SIP messages for the sip/ unit tests (documentation addresses only).

#include <string>
#include <string_view>

namespace sp::sip::test {

// head: start line and headers, each line ending with CRLF, without Content-Length.
inline std::string withBody(std::string_view head, std::string_view body) {
    std::string m(head);
    m.append("Content-Length: ").append(std::to_string(body.size())).append("\r\n\r\n");
    m.append(body);
    return m;
}

// What sipp's built-in "uac" scenario sends.
inline std::string sippInvite(std::string_view call_id = "1-4242@198.51.100.7") {
    std::string head = "INVITE sip:service@192.0.2.10:5060 SIP/2.0\r\n"
                       "Via: SIP/2.0/UDP 198.51.100.7:5061;branch=z9hG4bK-4242-1-0\r\n"
                       "From: sipp <sip:sipp@198.51.100.7:5061>;tag=4242SIPpTag001\r\n"
                       "To: service <sip:service@192.0.2.10:5060>\r\n"
                       "Call-ID: ";
    head.append(call_id).append("\r\n");
    head.append("CSeq: 1 INVITE\r\n"
                "Contact: sip:sipp@198.51.100.7:5061\r\n"
                "Max-Forwards: 70\r\n"
                "Subject: Performance Test\r\n"
                "Content-Type: application/sdp\r\n");
    return withBody(head, "v=0\r\n"
                          "o=user1 53655765 2353687637 IN IP4 198.51.100.7\r\n"
                          "s=-\r\n"
                          "c=IN IP4 198.51.100.7\r\n"
                          "t=0 0\r\n"
                          "m=audio 6000 RTP/AVP 0\r\n"
                          "a=rtpmap:0 PCMU/8000\r\n");
}

// What sipvicious' svmap sends (To/From rewritten to documentation addresses).
inline std::string sipviciousOptions() {
    return withBody("OPTIONS sip:100@192.0.2.10 SIP/2.0\r\n"
                    "Via: SIP/2.0/UDP 198.51.100.23:5060;branch=z9hG4bK-2876093012;rport\r\n"
                    "Max-Forwards: 70\r\n"
                    "To: \"sipvicious\"<sip:100@192.0.2.1>\r\n"
                    "From: \"sipvicious\"<sip:100@192.0.2.1>;tag=6434396633623535313363340131\r\n"
                    "User-Agent: friendly-scanner\r\n"
                    "Call-ID: 366432446553395631349\r\n"
                    "Contact: sip:100@198.51.100.23:5060\r\n"
                    "CSeq: 1 OPTIONS\r\n"
                    "Accept: application/sdp\r\n",
                    "");
}

inline std::string softphoneRegister() {
    return withBody("REGISTER sip:192.0.2.10 SIP/2.0\r\n"
                    "Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bKreg1;rport\r\n"
                    "Max-Forwards: 70\r\n"
                    "From: <sip:1001@192.0.2.10>;tag=reg1\r\n"
                    "To: <sip:1001@192.0.2.10>\r\n"
                    "Call-ID: reg-call-1@203.0.113.5\r\n"
                    "CSeq: 1 REGISTER\r\n"
                    "Contact: <sip:1001@203.0.113.5:5060>\r\n"
                    "User-Agent: Zoiper rv2.10.8.2\r\n"
                    "Expires: 3600\r\n",
                    "");
}

inline std::string okResponse() {
    return withBody("SIP/2.0 200 OK\r\n"
                    "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-77\r\n"
                    "From: <sip:alice@192.0.2.10>;tag=a1\r\n"
                    "To: <sip:bob@198.51.100.7>;tag=b2\r\n"
                    "Call-ID: resp-1\r\n"
                    "CSeq: 7 OPTIONS\r\n"
                    "User-Agent: SomePhone/1.0\r\n",
                    "");
}

} // namespace sp::sip::test
